// PcapngWriter: what it writes is read back three ways, none of them the writer itself: a strict block walker
// written from the pcapng specification (pcapng_check.hpp), our own reader (tracer::CaptureFile, which
// `hoptrace import` uses), and Wireshark's tshark/capinfos when installed. Failures leave no partial file.

#include "report/pcapng_writer.hpp"

#include "pcapng_check.hpp"
#include "tracer/capture_file.hpp"

#include <gtest/gtest.h>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <sstream>

namespace hoptrace::report {
namespace {

using test::TempDir;

// Frames of every length modulo 4 (padding), an empty one, a large one; timestamps whose high 32 bits
// differ; both directions and none; comments with UTF-8, and none.
struct Sample {
    std::uint32_t interface;
    std::int64_t ts_ns;
    std::uint32_t wire_len;
    Direction direction;
    std::vector<std::uint8_t> bytes;
    std::string comment;
};

std::vector<std::uint8_t> pattern(std::size_t n, std::uint8_t seed) {
    std::vector<std::uint8_t> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::uint8_t>(seed + i * 7);
    return v;
}

std::vector<Sample> samples() {
    return {
        {0, 1795294903485709370, 60, Direction::outbound, pattern(60, 1), "journey 1 (flow 1, forward), hop 1 of 4"},
        {1, 1795294903485722584, 61, Direction::inbound, pattern(61, 2), "docker0 → uplink after 27.5 µs"},
        {0, 1795294903485722584, 1500, Direction::unknown, pattern(62, 3), ""},  // snapped: 62 of 1500 bytes
        {1, 1795294904000000001, 63, Direction::unknown, pattern(63, 4), "x"},
        {0, 4294967296, 0, Direction::inbound, {}, "an empty frame, timestamp 2^32 ns"},
        {1, 0, 9000, Direction::outbound, pattern(9000, 5), std::string(300, 'c')},
    };
}

const std::vector<PcapngInterface> k_interfaces{
    {"c1-eth0", "role container, netns ht1-c1, interface eth0", 1, 262144},
    {"tun0", "role other, raw IP", 101, 96},
};

void write_samples(const std::string& path, const std::vector<Sample>& packets) {
    auto w = PcapngWriter::create(path, {"hoptrace test", "written by pcapng_writer_test"});
    ASSERT_TRUE(w) << w.error();
    for (const auto& i : k_interfaces) {
        auto id = w->add_interface(i);
        ASSERT_TRUE(id) << id.error();
    }
    for (const Sample& s : packets) {
        auto ok = w->write({s.interface, s.ts_ns, s.wire_len, s.direction, s.bytes, s.comment});
        ASSERT_TRUE(ok) << ok.error();
    }
    EXPECT_EQ(w->interfaces(), 2U);
    EXPECT_EQ(w->packets(), packets.size());
    auto done = w->finish();
    ASSERT_TRUE(done) << done.error();
}

TEST(PcapngWriter, blocks_follow_the_specification) {
    TempDir dir;
    const std::string path = dir.file("out.pcapng");
    const auto packets = samples();
    write_samples(path, packets);
    const test::Walked w = test::walk_pcapng(path);
    ASSERT_EQ(w.error, "");
    EXPECT_EQ(w.section_options.at(4), std::vector<std::string>{"hoptrace test"});  // shb_userappl
    EXPECT_EQ(w.section_options.at(1), std::vector<std::string>{"written by pcapng_writer_test"});
    ASSERT_EQ(w.interfaces.size(), 2U);
    for (std::size_t i = 0; i < 2; ++i) {
        EXPECT_EQ(w.interfaces[i].link_type, k_interfaces[i].link_type);
        EXPECT_EQ(w.interfaces[i].snaplen, k_interfaces[i].snaplen);
        EXPECT_EQ(w.interfaces[i].options.at(2), std::vector<std::string>{k_interfaces[i].name});
        EXPECT_EQ(w.interfaces[i].options.at(3), std::vector<std::string>{k_interfaces[i].description});
        EXPECT_EQ(w.interfaces[i].options.at(9), std::vector<std::string>{std::string(1, '\x09')});  // if_tsresol 9
    }
    ASSERT_EQ(w.packets.size(), packets.size());
    for (std::size_t i = 0; i < packets.size(); ++i) {
        SCOPED_TRACE("packet " + std::to_string(i));
        const auto& got = w.packets[i];
        const Sample& want = packets[i];
        EXPECT_EQ(got.interface, want.interface);
        EXPECT_EQ(got.timestamp, static_cast<std::uint64_t>(want.ts_ns));
        EXPECT_EQ(got.bytes, want.bytes);
        EXPECT_EQ(got.original_length,
                  std::max<std::uint32_t>(want.wire_len, static_cast<std::uint32_t>(want.bytes.size())));
        EXPECT_EQ(got.comments,
                  want.comment.empty() ? std::vector<std::string>{} : std::vector<std::string>{want.comment});
        if (want.direction == Direction::unknown) {
            EXPECT_FALSE(got.flags);
        } else {
            EXPECT_EQ(got.flags, want.direction == Direction::inbound ? 1U : 2U);
        }
    }
}

TEST(PcapngWriter, our_reader_gets_back_interfaces_times_bytes_and_directions) {
    TempDir dir;
    const std::string path = dir.file("out.pcapng");
    const auto packets = samples();
    write_samples(path, packets);
    auto file = CaptureFile::open(path);
    ASSERT_TRUE(file) << file.error();
    FileFrame ff;
    std::size_t n = 0;
    for (;;) {
        auto more = (*file)->next(ff);
        ASSERT_TRUE(more) << more.error();
        if (!*more) break;
        ASSERT_LT(n, packets.size());
        const Sample& want = packets[n++];
        EXPECT_EQ(ff.interface, want.interface);
        EXPECT_EQ(ff.frame.ts_ns, want.ts_ns);
        EXPECT_EQ(std::vector<std::uint8_t>(ff.frame.bytes.begin(), ff.frame.bytes.end()), want.bytes);
        EXPECT_EQ(ff.frame.direction, want.direction);
        EXPECT_EQ(ff.frame.link_type, want.interface == 0 ? LinkType::ethernet : LinkType::raw);
    }
    EXPECT_EQ(n, packets.size());
    const auto& interfaces = (*file)->interfaces();
    ASSERT_EQ(interfaces.size(), 2U);
    EXPECT_EQ(interfaces[0].name, "c1-eth0");
    EXPECT_EQ(interfaces[0].description, "role container, netns ht1-c1, interface eth0");
    EXPECT_EQ(interfaces[1].name, "tun0");
    EXPECT_EQ(interfaces[1].snaplen, 96U);
}

TEST(PcapngWriter, tshark_and_capinfos_read_interfaces_comments_and_nanoseconds) {
    if (!test::have_tool("tshark") || !test::have_tool("capinfos")) GTEST_SKIP() << "tshark/capinfos not installed";
    TempDir dir;
    const std::string path = dir.file("out.pcapng");
    const auto packets = samples();
    write_samples(path, packets);

    const auto rows = test::tshark_fields(path, {"frame.interface_name", "frame.interface_description",
                                                 "frame.time_epoch", "frame.len", "frame.cap_len", "frame.comment"});
    ASSERT_TRUE(rows) << "tshark could not read " << path;
    ASSERT_EQ(rows->size(), packets.size());
    for (std::size_t i = 0; i < packets.size(); ++i) {
        SCOPED_TRACE("frame " + std::to_string(i + 1));
        const auto& r = (*rows)[i];
        const Sample& want = packets[i];
        EXPECT_EQ(r[0], k_interfaces[want.interface].name);
        EXPECT_EQ(r[1], k_interfaces[want.interface].description);
        EXPECT_EQ(test::epoch_ns(r[2]), want.ts_ns) << r[2];
        EXPECT_EQ(r[3], std::to_string(std::max<std::size_t>(want.wire_len, want.bytes.size())));
        EXPECT_EQ(r[4], std::to_string(want.bytes.size()));
        EXPECT_EQ(r[5], want.comment);
    }

    const auto info = test::run_command("capinfos -M '" + path + "' 2>&1");
    ASSERT_TRUE(info);
    EXPECT_NE(info->find("Number of interfaces in file: 2"), std::string::npos) << *info;
    EXPECT_NE(info->find("Name = c1-eth0"), std::string::npos) << *info;
    EXPECT_NE(info->find("Name = tun0"), std::string::npos) << *info;
    EXPECT_NE(info->find("Capture application: hoptrace test"), std::string::npos) << *info;
    EXPECT_NE(info->find("Number of packets:   6"), std::string::npos) << *info;
    EXPECT_NE(info->find("nanoseconds (9)"), std::string::npos) << *info;
}

TEST(PcapngWriter, a_long_comment_is_cut_at_a_character_boundary) {
    TempDir dir;
    const std::string path = dir.file("long.pcapng");
    std::string comment;
    while (comment.size() < 70000) comment += "µ";  // 2 bytes each: 65532 is a boundary, 65533 would not be
    comment = "a" + comment;                        // now the boundaries are odd: 65532 cuts a character
    {
        auto w = PcapngWriter::create(path, {"t", ""});
        ASSERT_TRUE(w) << w.error();
        ASSERT_TRUE(w->add_interface({"x", "", 1, 0}));
        const std::vector<std::uint8_t> frame = pattern(14, 0);
        ASSERT_TRUE(w->write({0, 1, 14, Direction::unknown, frame, comment}));
        ASSERT_TRUE(w->finish());
    }
    const test::Walked w = test::walk_pcapng(path);
    ASSERT_EQ(w.error, "");
    ASSERT_EQ(w.packets.size(), 1U);
    ASSERT_EQ(w.packets[0].comments.size(), 1U);
    const std::string& got = w.packets[0].comments[0];
    EXPECT_EQ(got.size(), 65531U);  // "a" + 32765 × "µ": the last whole character before 65532 bytes
    EXPECT_EQ(got, comment.substr(0, got.size()));
    EXPECT_TRUE(w.section_options.find(1) == w.section_options.end()) << "an empty section comment is left out";
}

TEST(PcapngWriter, cannot_create_names_the_file) {
    TempDir dir;
    const std::string path = dir.file("no/such/dir/out.pcapng");
    auto w = PcapngWriter::create(path, {"t", ""});
    ASSERT_FALSE(w);
    EXPECT_EQ(w.error(), path + ": cannot create: No such file or directory");
}

TEST(PcapngWriter, without_finish_the_partial_file_is_removed) {
    TempDir dir;
    const std::string path = dir.file("partial.pcapng");
    {
        auto w = PcapngWriter::create(path, {"t", ""});
        ASSERT_TRUE(w);
        ASSERT_TRUE(w->add_interface({"x", "", 1, 0}));
        EXPECT_TRUE(std::filesystem::exists(path));
    }
    EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(PcapngWriter, bad_packets_are_errors_and_the_file_goes) {
    TempDir dir;
    const std::string path = dir.file("bad.pcapng");
    auto w = PcapngWriter::create(path, {"t", ""});
    ASSERT_TRUE(w);
    ASSERT_TRUE(w->add_interface({"x", "", 1, 0}));
    const std::vector<std::uint8_t> frame = pattern(20, 0);
    ASSERT_TRUE(w->write({0, 5, 20, Direction::unknown, frame, ""}));
    auto bad = w->write({1, 6, 20, Direction::unknown, frame, ""});
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error(), path + ": packet 2 is on interface 1, but only 1 are described");
    EXPECT_FALSE(std::filesystem::exists(path));
    // Sticky: every later call says the same.
    EXPECT_EQ(w->write({0, 7, 20, Direction::unknown, frame, ""}).error(), bad.error());
    EXPECT_EQ(w->finish().error(), bad.error());

    const std::string path2 = dir.file("negative.pcapng");
    auto w2 = PcapngWriter::create(path2, {"t", ""});
    ASSERT_TRUE(w2);
    ASSERT_TRUE(w2->add_interface({"x", "", 1, 0}));
    auto neg = w2->write({0, -1, 20, Direction::unknown, frame, ""});
    ASSERT_FALSE(neg);
    EXPECT_EQ(neg.error(), path2 + ": packet 1: timestamp before 1970");
    EXPECT_FALSE(std::filesystem::exists(path2));
}

// /dev/full accepts the open and fails every write with ENOSPC: the error names it, and being a device it
// is not removed (a failed export to /dev/null or a pipe must not delete it).
TEST(PcapngWriter, a_full_device_is_an_error_and_is_not_removed) {
    if (!std::filesystem::exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
    auto w = PcapngWriter::create("/dev/full", {"t", ""});
    ASSERT_TRUE(w) << w.error();
    ASSERT_TRUE(w->add_interface({"x", "", 1, 0}));
    const std::vector<std::uint8_t> frame = pattern(1500, 0);
    tl::expected<void, std::string> result;
    for (int i = 0; i < 2000 && result; ++i) result = w->write({0, i, 1500, Direction::unknown, frame, "c"});
    if (result) result = w->finish();
    ASSERT_FALSE(result);
    EXPECT_EQ(result.error(), "/dev/full: write failed: No space left on device");
    EXPECT_TRUE(std::filesystem::exists("/dev/full"));
}

// A file that hits the file size limit half way (EFBIG, like a full disk) is removed, and the error names it.
// In a child process: the limit is per process.
TEST(PcapngWriter, a_write_failing_half_way_removes_the_partial_file) {
    TempDir dir;
    const std::string path = dir.file("big.pcapng");
    const pid_t pid = fork();
    ASSERT_NE(pid, -1);
    if (pid == 0) {
        std::signal(SIGXFSZ, SIG_IGN);
        const rlimit limit{rlim_t{64} * 1024, rlim_t{64} * 1024};
        if (setrlimit(RLIMIT_FSIZE, &limit) != 0) _exit(10);
        auto w = PcapngWriter::create(path, {"t", ""});
        if (!w || !w->add_interface({"x", "", 1, 0})) _exit(11);
        const std::vector<std::uint8_t> frame = pattern(1500, 0);
        tl::expected<void, std::string> result;
        for (int i = 0; i < 2000 && result; ++i) result = w->write({0, i, 1500, Direction::unknown, frame, "c"});
        if (result) result = w->finish();
        if (result) _exit(12);
        if (result.error() != path + ": write failed: File too large") _exit(13);
        _exit(std::filesystem::exists(path) ? 14 : 0);
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0) << "10 setrlimit, 11 create, 12 no error, 13 wrong message, 14 file left";
    EXPECT_FALSE(std::filesystem::exists(path));
}

}  // namespace
}  // namespace hoptrace::report
