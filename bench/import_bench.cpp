// hoptrace_import_bench [--hoptrace PATH] [--sizes 62500,250000] [--workdir DIR] [--runs N] [--json] …
//
// Import and correlation must scale linearly. For each size this generates the four captures of
// bench/traffic_model.hpp (not timed), then, in the same run, measures as child processes:
//   tcpdump            `tcpdump -n -r FILE > /dev/null` on each of the four files, one after the other (the peer)
//   import             `hoptrace import --quiet --no-correlate --db X.db` on the four files
//   correlate          `hoptrace correlate --db X.db` on that database
//   import+correlate   `hoptrace import --quiet --db Y.db` on the four files (both in one process)
// Wall time (steady_clock around fork … wait4), user+sys CPU and peak RSS (wait4's ru_maxrss) of each, the
// median of --runs repetitions, and the ratios hoptrace/tcpdump: this machine is shared and noisy, so the
// ratio against a peer measured in the same run is what means something, not the absolute numbers.
// A benchmark is not a test: it exits 0 whatever it measures, 2 on usage errors, 1 when it cannot run at all.

#include "bench/traffic_model.hpp"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <exception>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

namespace fs = std::filesystem;

namespace {

constexpr int k_exit_ok = 0;
constexpr int k_exit_runtime = 1;
constexpr int k_exit_usage = 2;

// Child exit code when exec fails (the shell's convention for "command not found").
constexpr int k_exec_failed = 127;

struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct Options {
    std::string hoptrace;
    std::string tcpdump = "tcpdump";
    std::vector<std::uint64_t> sizes{62'500, 250'000};
    std::optional<fs::path> workdir;
    int runs = 3;
    std::uint64_t seed = 1;
    bool oneshot = true;
    bool json = false;
    bool keep = false;
};

// One child process: how long it took, what it cost, how it ended.
struct Measurement {
    double wall_s = 0;
    double cpu_s = 0;  // user + system
    double peak_rss_mib = 0;
    int exit_code = 0;  // 128 + signal when killed by one
};

// One phase in one run; the tcpdump phase is four processes (times summed, the largest peak RSS).
struct PhaseRun {
    double wall_s = 0;
    double cpu_s = 0;
    double peak_rss_mib = 0;
    bool ok = true;
};

struct PhaseResult {
    std::string name;
    std::vector<PhaseRun> runs;
    double wall_s = 0;  // medians over the runs that succeeded
    double cpu_s = 0;
    double peak_rss_mib = 0;
    std::size_t failed = 0;  // runs left out of the medians
};

struct SizeResult {
    std::uint64_t packets = 0;
    hoptrace::bench::ModelCounts counts;
    std::vector<PhaseResult> phases;  // tcpdump, import, correlate, [import+correlate]
    std::string correlate_summary;    // what `hoptrace correlate` printed (a sanity check: journeys ≈ packets)
};

double seconds(struct timeval tv) { return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) * 1e-6; }

// Runs argv[0] (searched in PATH) with stdout and stderr sent to the given files (appended).
Measurement run_process(const std::vector<std::string>& args, const fs::path& stdout_path,
                        const fs::path& stderr_path) {
    std::vector<char*> argv;
    argv.reserve(args.size() + 1);
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);

    const int out_fd = ::open(stdout_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    const int err_fd = ::open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (out_fd < 0 || err_fd < 0) {
        if (out_fd >= 0) ::close(out_fd);
        if (err_fd >= 0) ::close(err_fd);
        throw std::runtime_error("cannot open " + stdout_path.string() + " / " + stderr_path.string() + ": " +
                                 std::strerror(errno));
    }
    const auto start = std::chrono::steady_clock::now();
    const pid_t pid = ::fork();
    if (pid == 0) {
        // Child: only async-signal-safe calls until exec.
        if (::dup2(out_fd, STDOUT_FILENO) < 0 || ::dup2(err_fd, STDERR_FILENO) < 0) ::_exit(k_exec_failed);
        ::execvp(argv[0], argv.data());
        ::_exit(k_exec_failed);
    }
    ::close(out_fd);
    ::close(err_fd);
    if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));

    int status = 0;
    struct rusage usage {};
    pid_t waited = 0;
    do {
        waited = ::wait4(pid, &status, 0, &usage);
    } while (waited < 0 && errno == EINTR);
    const auto stop = std::chrono::steady_clock::now();
    if (waited < 0) throw std::runtime_error(std::string("wait4: ") + std::strerror(errno));

    Measurement m;
    m.wall_s = std::chrono::duration<double>(stop - start).count();
    m.cpu_s = seconds(usage.ru_utime) + seconds(usage.ru_stime);
    m.peak_rss_mib = static_cast<double>(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
    m.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return m;
}

double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    const std::size_t mid = v.size() / 2;
    return v.size() % 2 == 1 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

void summarise(PhaseResult& phase) {
    // A failed run measured something else (less work, or an error path): it does not enter the medians.
    std::vector<double> wall, cpu, rss;
    for (const auto& r : phase.runs) {
        if (!r.ok) {
            ++phase.failed;
            continue;
        }
        wall.push_back(r.wall_s);
        cpu.push_back(r.cpu_s);
        rss.push_back(r.peak_rss_mib);
    }
    phase.wall_s = median(wall);
    phase.cpu_s = median(cpu);
    phase.peak_rss_mib = median(rss);
}

std::string tail_of(const fs::path& log, std::size_t max_lines) {
    std::ifstream in(log);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) {
        lines.push_back(line);
        if (lines.size() > max_lines) lines.erase(lines.begin());
    }
    std::string out;
    for (const auto& l : lines) out += "    " + l + "\n";
    return out;
}

void remove_db(const fs::path& db) {
    std::error_code ec;
    for (const char* suffix : {"", "-wal", "-shm", "-journal"}) fs::remove(db.string() + suffix, ec);
}

class Bench {
public:
    explicit Bench(Options options) : m_options(std::move(options)) {}

    std::vector<SizeResult> run(const fs::path& workdir) {
        std::vector<SizeResult> results;
        for (const std::uint64_t packets : m_options.sizes) results.push_back(run_size(workdir, packets));
        return results;
    }

private:
    PhaseRun measure(const std::vector<std::string>& args, const fs::path& out, const fs::path& log,
                     const char* phase) {
        const Measurement m = run_process(args, out, log);
        PhaseRun r{m.wall_s, m.cpu_s, m.peak_rss_mib, m.exit_code == 0};
        if (!r.ok) {
            std::fprintf(stderr, "  warning: %s: '%s' exited with %d%s\n%s", phase, args.front().c_str(), m.exit_code,
                         m.exit_code == k_exec_failed ? " (not found?)" : "", tail_of(log, 5).c_str());
        }
        return r;
    }

    SizeResult run_size(const fs::path& workdir, std::uint64_t packets) {
        SizeResult result;
        result.packets = packets;
        const fs::path dir = workdir / ("p" + std::to_string(packets));
        std::fprintf(stderr, "%llu packets: generating captures in %s …\n", static_cast<unsigned long long>(packets),
                     dir.c_str());
        hoptrace::bench::ModelOptions model;
        model.packets = packets;
        model.seed = m_options.seed;
        result.counts = hoptrace::bench::write_captures(dir, model);

        std::vector<std::string> files;
        files.reserve(hoptrace::bench::k_point_count);
        for (const auto point : hoptrace::bench::k_points) files.push_back((dir / file_name(point)).string());
        const fs::path db = dir / "import.db";
        const fs::path oneshot_db = dir / "oneshot.db";
        const fs::path log = dir / "stderr.log";
        const fs::path correlate_out = dir / "correlate.out";

        PhaseResult tcpdump{"tcpdump -r", {}, 0, 0, 0, 0};
        PhaseResult import{"import", {}, 0, 0, 0, 0};
        PhaseResult correlate{"correlate", {}, 0, 0, 0, 0};
        PhaseResult oneshot{"import+correlate", {}, 0, 0, 0, 0};
        // The phases alternate within each run, so that a noisy neighbour hurts the peer and hoptrace alike.
        for (int run = 0; run < m_options.runs; ++run) {
            std::fprintf(stderr, "  run %d/%d: tcpdump", run + 1, m_options.runs);
            PhaseRun t;
            for (const auto& file : files) {
                const PhaseRun one = measure({m_options.tcpdump, "-n", "-r", file}, "/dev/null", log, "tcpdump");
                t.wall_s += one.wall_s;
                t.cpu_s += one.cpu_s;
                t.peak_rss_mib = std::max(t.peak_rss_mib, one.peak_rss_mib);
                t.ok = t.ok && one.ok;
            }
            tcpdump.runs.push_back(t);

            std::fprintf(stderr, ", import");
            remove_db(db);
            std::vector<std::string> args{m_options.hoptrace, "import", "--quiet",
                                          "--no-correlate",   "--db",   db.string()};
            args.insert(args.end(), files.begin(), files.end());
            import.runs.push_back(measure(args, "/dev/null", log, "import"));

            std::fprintf(stderr, ", correlate");
            std::error_code ec;
            fs::remove(correlate_out, ec);
            correlate.runs.push_back(
                measure({m_options.hoptrace, "correlate", "--db", db.string()}, correlate_out, log, "correlate"));
            if (!import.runs.back().ok) {
                // It ran on what the failed import left behind: not the same work as in the other runs.
                correlate.runs.back().ok = false;
                std::fprintf(stderr, " (left out: its import failed)");
            }
            if (std::ifstream in(correlate_out); in && correlate.runs.back().ok) {
                std::getline(in, result.correlate_summary);  // what a successful run found (a sanity check)
            }
            remove_db(db);

            if (m_options.oneshot) {
                std::fprintf(stderr, ", import+correlate");
                remove_db(oneshot_db);
                args = {m_options.hoptrace, "import", "--quiet", "--db", oneshot_db.string()};
                args.insert(args.end(), files.begin(), files.end());
                oneshot.runs.push_back(measure(args, "/dev/null", log, "import+correlate"));
                remove_db(oneshot_db);
            }
            std::fprintf(stderr, "\n");
        }
        for (PhaseResult* p : {&tcpdump, &import, &correlate, &oneshot}) {
            if (p->runs.empty()) continue;
            summarise(*p);
            result.phases.push_back(std::move(*p));
        }
        if (!m_options.keep) {
            std::error_code ec;
            fs::remove_all(dir, ec);
        }
        return result;
    }

    Options m_options;
};

// ---- reporting ----

const PhaseResult* find_phase(const SizeResult& s, std::string_view name) {
    for (const auto& p : s.phases) {
        if (p.name == name) return &p;
    }
    return nullptr;
}

double per_sighting(const SizeResult& s, const PhaseResult& p) {
    return s.counts.sightings == 0 ? 0 : p.wall_s / static_cast<double>(s.counts.sightings);
}
double cpu_per_sighting(const SizeResult& s, const PhaseResult& p) {
    return s.counts.sightings == 0 ? 0 : p.cpu_s / static_cast<double>(s.counts.sightings);
}

struct Linearity {
    std::string phase;
    double time_ratio = 0;  // time per sighting, largest ÷ smallest size
    double vs_peer = 0;     // the same, divided by tcpdump's own ratio (drift of the machine cancelled)
    double cpu_ratio = 0;   // CPU (user + sys) per sighting, largest ÷ smallest size (waiting excluded)
    double rss_ratio = 0;   // peak RSS, largest ÷ smallest size
};

std::vector<Linearity> linearity(const std::vector<SizeResult>& results) {
    std::vector<Linearity> out;
    if (results.size() < 2) return out;
    const auto smallest = std::min_element(results.begin(), results.end(), [](const auto& a, const auto& b) {
        return a.counts.sightings < b.counts.sightings;
    });
    const auto largest = std::max_element(results.begin(), results.end(), [](const auto& a, const auto& b) {
        return a.counts.sightings < b.counts.sightings;
    });
    if (smallest->counts.sightings == largest->counts.sightings) return out;
    const PhaseResult* peer_small = find_phase(*smallest, "tcpdump -r");
    const PhaseResult* peer_large = find_phase(*largest, "tcpdump -r");
    const double peer = peer_small != nullptr && peer_large != nullptr && per_sighting(*smallest, *peer_small) > 0
                            ? per_sighting(*largest, *peer_large) / per_sighting(*smallest, *peer_small)
                            : 0;
    for (const auto& p : smallest->phases) {
        const PhaseResult* q = find_phase(*largest, p.name);
        if (q == nullptr || per_sighting(*smallest, p) <= 0 || per_sighting(*largest, *q) <= 0) continue;
        Linearity l;
        l.phase = p.name;
        l.time_ratio = per_sighting(*largest, *q) / per_sighting(*smallest, p);
        l.vs_peer = peer > 0 ? l.time_ratio / peer : 0;
        l.cpu_ratio =
            cpu_per_sighting(*smallest, p) > 0 ? cpu_per_sighting(*largest, *q) / cpu_per_sighting(*smallest, p) : 0;
        l.rss_ratio = p.peak_rss_mib > 0 ? q->peak_rss_mib / p.peak_rss_mib : 0;
        out.push_back(l);
    }
    return out;
}

const char* verdict(double ratio) {
    // Sizes differ 4× by default: quadratic would show ~4, n·log n ~1.1, linear 1.
    if (ratio <= 1.25) return "linear";
    if (ratio <= 1.6) return "slightly super-linear (or noise: rerun)";
    return "SUPER-LINEAR";
}

std::string now_utc() {
    const std::time_t t = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

std::string host_name() {
    struct utsname u {};
    if (uname(&u) != 0) return "";
    return std::string(u.nodename) + " (" + u.sysname + " " + u.release + " " + u.machine + ")";
}

void print_table(std::FILE* out, const Options& options, const std::vector<SizeResult>& results) {
    std::fprintf(out,
                 "hoptrace import benchmark, %s, %u CPUs; median of %d runs; peer: tcpdump -n -r on each file in turn\n"
                 "ratios are hoptrace ÷ tcpdump on the same files in the same run (time: wall; memory: peak RSS)\n",
                 now_utc().c_str(), std::thread::hardware_concurrency(), options.runs);
    for (const auto& s : results) {
        std::fprintf(out, "\n%llu packets × 4 points = %llu sightings (%llu lost at the uplink), %.0f MiB of frames\n",
                     static_cast<unsigned long long>(s.packets), static_cast<unsigned long long>(s.counts.sightings),
                     static_cast<unsigned long long>(s.counts.lost),
                     static_cast<double>(s.counts.frame_bytes) / (1024.0 * 1024.0));
        std::fprintf(out, "  %-17s %10s %9s %13s %8s %13s %14s %14s %14s\n", "phase", "sightings", "wall s",
                     "sightings/s", "CPU s", "peak RSS MiB", "time ×tcpdump", "CPU ×tcpdump", "mem ×tcpdump");
        const PhaseResult* peer = find_phase(s, "tcpdump -r");
        for (const auto& p : s.phases) {
            if (p.failed == p.runs.size()) {
                std::fprintf(out, "  %-17s %10llu   every run FAILED: see the warnings\n", p.name.c_str(),
                             static_cast<unsigned long long>(s.counts.sightings));
                continue;
            }
            const double rate = p.wall_s > 0 ? static_cast<double>(s.counts.sightings) / p.wall_s : 0;
            std::fprintf(out, "  %-17s %10llu %9.3f %13.0f %8.3f %13.1f", p.name.c_str(),
                         static_cast<unsigned long long>(s.counts.sightings), p.wall_s, rate, p.cpu_s, p.peak_rss_mib);
            if (peer != nullptr && &p != peer && peer->wall_s > 0 && peer->cpu_s > 0 && peer->peak_rss_mib > 0) {
                std::fprintf(out, " %13.2f %13.2f %13.2f", p.wall_s / peer->wall_s, p.cpu_s / peer->cpu_s,
                             p.peak_rss_mib / peer->peak_rss_mib);
            } else {
                std::fprintf(out, " %13s %13s %13s", "1", "1", "1");
            }
            if (p.failed == 0) {
                std::fprintf(out, "\n");
            } else {
                std::fprintf(out, "   (%zu of %zu runs FAILED, left out: see the warnings)\n", p.failed, p.runs.size());
            }
        }
        if (!s.correlate_summary.empty()) std::fprintf(out, "  hoptrace correlate: %s\n", s.correlate_summary.c_str());
    }
    const auto lin = linearity(results);
    if (!lin.empty()) {
        const auto [lo, hi] = std::minmax_element(results.begin(), results.end(), [](const auto& a, const auto& b) {
            return a.counts.sightings < b.counts.sightings;
        });
        std::fprintf(out,
                     "\nlinearity: time per sighting at %llu sightings ÷ at %llu (1.00 = linear; quadratic would be "
                     "%.1f)\n",
                     static_cast<unsigned long long>(hi->counts.sightings),
                     static_cast<unsigned long long>(lo->counts.sightings),
                     static_cast<double>(hi->counts.sightings) / static_cast<double>(lo->counts.sightings));
        std::fprintf(out, "  %-17s %9s %15s %9s %10s\n", "phase", "wall", "wall÷tcpdump's", "CPU", "peak RSS");
        for (const auto& l : lin) {
            // A real super-linear step raises both the drift-corrected wall time and the CPU time; noise from
            // other tenants usually raises only one of them. So the verdict uses the smaller.
            std::fprintf(out, "  %-17s %9.2f %14.2f %9.2f %9.2f×   %s\n", l.phase.c_str(), l.time_ratio, l.vs_peer,
                         l.cpu_ratio, l.rss_ratio,
                         l.phase == "tcpdump -r" ? "(the peer: how much the machine drifted)"
                                                 : verdict(std::min(l.vs_peer, l.cpu_ratio)));
        }
    }
}

nlohmann::json to_json(const Options& options, const std::vector<SizeResult>& results) {
    nlohmann::json j;
    j["schema"] = "hoptrace-bench-import/1";
    j["date"] = now_utc();
    j["host"] = host_name();
    j["cpus"] = std::thread::hardware_concurrency();
    j["runs"] = options.runs;
    j["hoptrace"] = options.hoptrace;
    j["peer"] = options.tcpdump + " -n -r FILE > /dev/null, each file in turn";
    j["sizes"] = nlohmann::json::array();
    for (const auto& s : results) {
        nlohmann::json size;
        size["packets"] = s.packets;
        size["sightings"] = s.counts.sightings;
        size["lost"] = s.counts.lost;
        size["flows"] = s.counts.flows;
        size["frame_bytes"] = s.counts.frame_bytes;
        size["correlate_summary"] = s.correlate_summary;
        const PhaseResult* peer = find_phase(s, "tcpdump -r");
        size["phases"] = nlohmann::json::array();
        for (const auto& p : s.phases) {
            nlohmann::json phase;
            phase["name"] = p.name;
            phase["failed_runs"] = p.failed;
            phase["wall_s"] = p.wall_s;
            phase["cpu_s"] = p.cpu_s;
            phase["peak_rss_mib"] = p.peak_rss_mib;
            phase["sightings_per_s"] = p.wall_s > 0 ? static_cast<double>(s.counts.sightings) / p.wall_s : 0.0;
            if (peer != nullptr && peer->wall_s > 0 && peer->cpu_s > 0 && peer->peak_rss_mib > 0) {
                phase["time_ratio_vs_tcpdump"] = p.wall_s / peer->wall_s;
                phase["cpu_ratio_vs_tcpdump"] = p.cpu_s / peer->cpu_s;
                phase["memory_ratio_vs_tcpdump"] = p.peak_rss_mib / peer->peak_rss_mib;
            }
            phase["runs"] = nlohmann::json::array();
            for (const auto& r : p.runs) {
                phase["runs"].push_back(
                    {{"wall_s", r.wall_s}, {"cpu_s", r.cpu_s}, {"peak_rss_mib", r.peak_rss_mib}, {"ok", r.ok}});
            }
            size["phases"].push_back(phase);
        }
        j["sizes"].push_back(size);
    }
    j["linearity"] = nlohmann::json::array();
    for (const auto& l : linearity(results)) {
        j["linearity"].push_back({{"phase", l.phase},
                                  {"time_per_sighting_ratio", l.time_ratio},
                                  {"time_per_sighting_ratio_vs_tcpdump", l.vs_peer},
                                  {"cpu_per_sighting_ratio", l.cpu_ratio},
                                  {"peak_rss_ratio", l.rss_ratio}});
    }
    return j;
}

// ---- command line ----

constexpr const char* k_usage =
    "usage: hoptrace_import_bench [--hoptrace PATH] [--sizes N,N…] [--workdir DIR] [--runs N] [--seed S]\n"
    "                             [--tcpdump PATH] [--no-oneshot] [--keep] [--json]\n"
    "  --hoptrace PATH  the hoptrace binary (default: ../cli/hoptrace beside this program, else PATH)\n"
    "  --sizes N,N…     packets per size; each packet is seen at 4 points (default 62500,250000:\n"
    "                   a quarter million and a million sightings)\n"
    "  --workdir DIR    where captures and databases go (default: a new directory in $TMPDIR or /tmp);\n"
    "                   needs ~2.5 GB free at the default sizes\n"
    "  --runs N         repetitions per phase, the median is reported (default 3)\n"
    "  --seed S         seed of the generated traffic (default 1)\n"
    "  --tcpdump PATH   the peer (default: tcpdump in PATH)\n"
    "  --no-oneshot     skip the `hoptrace import` with correlation in one go\n"
    "  --keep           keep the generated captures and logs\n"
    "  --json           results as JSON on stdout (the table goes to stderr)\n";

std::uint64_t parse_number(std::string_view text, const char* what) {
    std::uint64_t v = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc{} || end != text.data() + text.size() || text.empty()) {
        throw UsageError(std::string(what) + ": '" + std::string(text) + "' is not a number");
    }
    return v;
}

std::string default_hoptrace() {
    std::error_code ec;
    const fs::path self = fs::read_symlink("/proc/self/exe", ec);
    if (!ec) {
        const fs::path beside = self.parent_path().parent_path() / "cli" / "hoptrace";
        if (::access(beside.c_str(), X_OK) == 0) return beside.string();
    }
    return "hoptrace";
}

Options parse_options(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        std::string value;
        auto take = [&](std::string_view name) {
            if (arg == name) {
                if (i + 1 == argc) throw UsageError(std::string(name) + " needs a value");
                value = argv[++i];
                return true;
            }
            if (arg.size() > name.size() && arg.starts_with(name) && arg[name.size()] == '=') {
                value = arg.substr(name.size() + 1);
                return true;
            }
            return false;
        };
        if (arg == "--help" || arg == "-h") {
            std::fputs(k_usage, stdout);
            std::exit(k_exit_ok);
        } else if (arg == "--json") {
            o.json = true;
        } else if (arg == "--keep") {
            o.keep = true;
        } else if (arg == "--no-oneshot") {
            o.oneshot = false;
        } else if (take("--hoptrace")) {
            o.hoptrace = value;
        } else if (take("--tcpdump")) {
            o.tcpdump = value;
        } else if (take("--workdir")) {
            o.workdir = value;
        } else if (take("--runs")) {
            const auto runs = parse_number(value, "--runs");
            if (runs < 1 || runs > 100) throw UsageError("--runs must be from 1 to 100");
            o.runs = static_cast<int>(runs);
        } else if (take("--seed")) {
            o.seed = parse_number(value, "--seed");
        } else if (take("--sizes")) {
            o.sizes.clear();
            std::stringstream list(value);
            for (std::string item; std::getline(list, item, ',');) {
                const auto n = parse_number(item, "--sizes");
                if (n < 1 || n > 50'000'000) throw UsageError("--sizes: each size must be from 1 to 50000000 packets");
                o.sizes.push_back(n);
            }
            if (o.sizes.empty()) throw UsageError("--sizes needs at least one size");
        } else {
            throw UsageError("unknown argument '" + std::string(arg) + "'");
        }
    }
    if (o.hoptrace.empty()) {
        o.hoptrace = default_hoptrace();
    } else if (o.hoptrace.find('/') != std::string::npos && ::access(o.hoptrace.c_str(), X_OK) != 0) {
        throw UsageError("--hoptrace " + o.hoptrace + ": not an executable file");
    }
    return o;
}

}  // namespace

int main(int argc, char** argv) {
    Options options;
    try {
        options = parse_options(argc, argv);
    } catch (const UsageError& e) {
        std::fprintf(stderr, "hoptrace_import_bench: %s\n%s", e.what(), k_usage);
        return k_exit_usage;
    }

    fs::path workdir;
    bool made_workdir = false;
    try {
        if (options.workdir) {
            workdir = *options.workdir;
            fs::create_directories(workdir);
        } else {
            const char* tmp = std::getenv("TMPDIR");
            std::string pattern = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/hoptrace-bench-XXXXXX";
            if (::mkdtemp(pattern.data()) == nullptr) {
                throw std::runtime_error("mkdtemp " + pattern + ": " + std::strerror(errno));
            }
            workdir = pattern;
            made_workdir = true;
        }
        std::fprintf(stderr, "hoptrace: %s\ntcpdump: %s\nworkdir: %s\n", options.hoptrace.c_str(),
                     options.tcpdump.c_str(), workdir.c_str());

        Bench bench(options);
        const auto results = bench.run(workdir);
        if (made_workdir && !options.keep) {
            std::error_code ec;
            fs::remove_all(workdir, ec);
        }
        print_table(options.json ? stderr : stdout, options, results);
        if (options.json) std::printf("%s\n", to_json(options, results).dump(2).c_str());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "hoptrace_import_bench: %s\n", e.what());
        return k_exit_runtime;
    }
    return k_exit_ok;
}
