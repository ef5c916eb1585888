// Interrupted and failing writes: `lowbit quantize` killed with SIGKILL at points spread over its run,
// and run out of space (a file-size limit, as a full disk answers), must leave the output folder
// either as it was or complete, never partial; and a later run must clean what the killed one left.
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <thread>

#include "lowbit/core/file.h"
#include "test_util.h"

namespace lowbit {
namespace {

namespace fs = std::filesystem;

// Starts `lowbit ARGS...` with stdout and stderr going to `log`; fsize_limit > 0 sets RLIMIT_FSIZE and
// ignores SIGXFSZ, so writes past the limit fail with EFBIG as they would with ENOSPC on a full disk.
pid_t spawn_lowbit(const std::vector<std::string>& args, const fs::path& log, rlim_t fsize_limit = 0) {
  std::vector<std::string> argv_s{LOWBIT_BINARY};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string log_s = log.string();
  pid_t pid = fork();
  if (pid == 0) {  // only async-signal-safe calls until exec
    int fd = ::open(log_s.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    if (fsize_limit > 0) {
      ::signal(SIGXFSZ, SIG_IGN);
      struct rlimit rl {fsize_limit, fsize_limit};
      ::setrlimit(RLIMIT_FSIZE, &rl);
    }
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}

int wait_status(pid_t pid) {
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  return st;
}

// File name -> content of every file in a folder (recursively); empty when the folder is absent.
std::map<std::string, std::string> snapshot(const fs::path& dir) {
  std::map<std::string, std::string> m;
  if (!fs::exists(dir)) return m;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) m[fs::relative(e.path(), dir).string()] = read_file(e.path());
  return m;
}

// Siblings of `dest` whose names start with ".<name>." (temporary or moved-aside folders).
std::vector<std::string> leftovers(const fs::path& dest) {
  std::vector<std::string> v;
  const std::string prefix = "." + dest.filename().string() + ".";
  for (const auto& e : fs::directory_iterator(dest.parent_path()))
    if (e.path().filename().string().rfind(prefix, 0) == 0) v.push_back(e.path().filename().string());
  return v;
}

const std::string kModel = test::model_dir("llama-16m-wiki").string();

TEST(Interrupt, KillNineLeavesOldOrCompleteOutput) {
  auto dir = test::temp_dir("kill");
  const fs::path old_ref = dir / "old", new_ref = dir / "new", out = dir / "out";
  // The two states the output may be in: the previous quantization (int8) or the new one (int4).
  ASSERT_EQ(wait_status(spawn_lowbit({"quantize", kModel, "-o", old_ref.string(), "--scheme", "int8"}, dir / "log")), 0)
      << read_file(dir / "log");
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(wait_status(spawn_lowbit({"quantize", kModel, "-o", new_ref.string(), "--scheme", "int4"}, dir / "log")), 0)
      << read_file(dir / "log");
  const double run_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto old_snap = snapshot(old_ref), new_snap = snapshot(new_ref);
  ASSERT_FALSE(old_snap.empty());
  ASSERT_NE(old_snap, new_snap);

  // Kill points spread evenly over one run (plus a little jitter), with and without an old folder.
  const int kKills = 12;
  int killed_mid_run = 0, saw_old = 0, saw_new = 0, saw_absent = 0;
  for (int i = 0; i < kKills; ++i) {
    const bool replace = i % 2 == 0;  // --force onto the old folder, or a fresh output
    fs::remove_all(out);
    if (replace) fs::copy(old_ref, out, fs::copy_options::recursive);
    std::vector<std::string> args{"quantize", kModel, "-o", out.string(), "--scheme", "int4"};
    if (replace) args.push_back("--force");
    pid_t pid = spawn_lowbit(args, dir / "log");
    const double at = run_s * (double(i) + 0.5) / kKills;
    std::this_thread::sleep_for(std::chrono::duration<double>(at));
    ::kill(pid, SIGKILL);
    int st = wait_status(pid);
    if (WIFSIGNALED(st)) ++killed_mid_run;
    const auto snap = snapshot(out);
    if (snap.empty()) {
      EXPECT_FALSE(replace) << "the old output vanished after a kill at " << at << " s";
      EXPECT_FALSE(fs::exists(out)) << "an empty output folder after a kill at " << at << " s";
      ++saw_absent;
    } else if (snap == old_snap) {
      EXPECT_TRUE(replace);
      ++saw_old;
    } else {
      EXPECT_EQ(snap, new_snap) << "a partial output after a kill at " << at << " s";
      ++saw_new;
    }
  }
  // The kills must actually have landed during the work, not all before or after it.
  EXPECT_GE(killed_mid_run, kKills / 2);
  EXPECT_GT(saw_old + saw_absent, 0);
  std::printf("kills: %d mid-run of %d; outcomes: old %d, absent %d, new %d\n", killed_mid_run, kKills, saw_old,
              saw_absent, saw_new);

  // A complete run afterwards removes whatever the killed runs left beside the output.
  ASSERT_EQ(wait_status(spawn_lowbit({"quantize", kModel, "-o", out.string(), "--scheme", "int4", "--force"}, dir / "log")), 0)
      << read_file(dir / "log");
  EXPECT_EQ(snapshot(out), new_snap);
  EXPECT_TRUE(leftovers(out).empty()) << leftovers(out).front();
}

TEST(Interrupt, FullDiskFailsCleanlyAndKeepsTheOldOutput) {
  auto dir = test::temp_dir("full");
  const fs::path out = dir / "out";
  // The int4 model is ~17 MB: a 4 MB file-size limit fails the write of model.safetensors.
  const rlim_t limit = 4u << 20;
  int st = wait_status(spawn_lowbit({"quantize", kModel, "-o", out.string(), "--scheme", "int4"}, dir / "log", limit));
  std::string log = read_file(dir / "log");
  ASSERT_TRUE(WIFEXITED(st)) << log;
  EXPECT_EQ(WEXITSTATUS(st), 1) << log;
  EXPECT_NE(log.find("model.safetensors"), std::string::npos) << log;
  EXPECT_NE(log.find("File too large"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(out));
  EXPECT_TRUE(leftovers(out).empty());

  // With an existing output and --force, the failed run leaves it untouched.
  ASSERT_EQ(wait_status(spawn_lowbit({"quantize", test::model_dir("stories260K/hf").string(), "-o", out.string(), "--scheme", "int8"}, dir / "log")), 0)
      << read_file(dir / "log");
  const auto before = snapshot(out);
  st = wait_status(spawn_lowbit({"quantize", kModel, "-o", out.string(), "--scheme", "int4", "--force"}, dir / "log", limit));
  log = read_file(dir / "log");
  ASSERT_TRUE(WIFEXITED(st)) << log;
  EXPECT_EQ(WEXITSTATUS(st), 1) << log;
  EXPECT_EQ(snapshot(out), before);
  EXPECT_TRUE(leftovers(out).empty());
}

}  // namespace
}  // namespace lowbit
