// hoptrace_gen_captures OUTDIR N_PACKETS [--seed S]
// Writes c-eth0.pcap, veth.pcap, docker0.pcap and uplink.pcap: N_PACKETS distinct packets of a container's
// traffic, each seen at the four points of its path (see bench/traffic_model.hpp). Deterministic for a seed.

#include "bench/traffic_model.hpp"

#include <charconv>
#include <cstdio>
#include <exception>
#include <string>
#include <string_view>
#include <system_error>

namespace {

constexpr int k_exit_runtime = 1;
constexpr int k_exit_usage = 2;

bool parse_u64(std::string_view text, std::uint64_t& out) {
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    return ec == std::errc{} && end == text.data() + text.size() && !text.empty();
}

int usage(const char* why) {
    std::fprintf(stderr, "hoptrace_gen_captures: %s\nusage: hoptrace_gen_captures OUTDIR N_PACKETS [--seed S]\n", why);
    return k_exit_usage;
}

}  // namespace

int main(int argc, char** argv) {
    std::string outdir;
    hoptrace::bench::ModelOptions options;
    bool have_count = false;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (arg == "--help" || arg == "-h") {
            std::printf(
                "usage: hoptrace_gen_captures OUTDIR N_PACKETS [--seed S]\n"
                "Writes c-eth0.pcap, veth.pcap, docker0.pcap, uplink.pcap into OUTDIR: N_PACKETS packets\n"
                "(~60%% UDP, ~30%% TCP, ~10%% ICMP echo), each seen at the four points, ~0.1%% lost\n"
                "before the uplink. 250000 packets make a million sightings.\n");
            return 0;
        }
        if (arg == "--seed") {
            if (++i == argc || !parse_u64(argv[i], options.seed)) return usage("--seed needs a number");
        } else if (arg.starts_with("--seed=")) {
            if (!parse_u64(arg.substr(7), options.seed)) return usage("--seed needs a number");
        } else if (outdir.empty()) {
            outdir = arg;
        } else if (!have_count) {
            if (!parse_u64(arg, options.packets) || options.packets == 0 || options.packets > 100'000'000) {
                return usage("N_PACKETS must be a number from 1 to 100000000");
            }
            have_count = true;
        } else {
            return usage(("unexpected argument '" + std::string(arg) + "'").c_str());
        }
    }
    if (!have_count) return usage("OUTDIR and N_PACKETS are required");

    try {
        const auto c = hoptrace::bench::write_captures(outdir, options);
        std::printf(
            "%s: %llu packets, %llu sightings (%llu lost before the uplink), %llu flows "
            "(%llu with a rewritten port/id); udp %llu, tcp %llu, icmp %llu; %llu replies; %.1f MiB\n",
            outdir.c_str(), static_cast<unsigned long long>(c.packets), static_cast<unsigned long long>(c.sightings),
            static_cast<unsigned long long>(c.lost), static_cast<unsigned long long>(c.flows),
            static_cast<unsigned long long>(c.translated_flows), static_cast<unsigned long long>(c.udp),
            static_cast<unsigned long long>(c.tcp), static_cast<unsigned long long>(c.icmp),
            static_cast<unsigned long long>(c.replies), static_cast<double>(c.frame_bytes) / (1024.0 * 1024.0));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "hoptrace_gen_captures: %s\n", e.what());
        return k_exit_runtime;
    }
    return 0;
}
