// CaptureFile: pcap through libpcap, pcapng through our block reader; timestamps to the nanosecond,
// interfaces, directions, and one clear line for every kind of bad file. Expected timestamps come from
// tshark (the command is above each block) or, for the synthetic file, from the script that wrote it.

#include "tracer/capture_file.hpp"

#include "test_support.hpp"

#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

namespace hoptrace {
namespace {

using test::data_path;
using test::OwnedFrame;
using test::read_capture;
using test::read_frames;
using test::ReadResult;

std::vector<std::uint8_t> file_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// ---- Timestamps ----------------------------------------------------------------------------------------
// tshark -r eth_ipv4.pcap -c 3 -T fields -e frame.number -e frame.time_epoch -e frame.len
//   1 1795295335.196916000 110   2 1795295335.196943000 70   3 1795295335.324911000 170
// tshark -r eth_ipv4_nano.pcap -c 1 -T fields -e frame.number -e frame.time_epoch -e frame.len
//   1 1795295335.324911656 170

TEST(CaptureFilePcap, microsecond_file_gives_ns) {
    const auto frames = read_frames("eth_ipv4.pcap");
    ASSERT_EQ(frames.size(), 30U);
    EXPECT_EQ(frames[0].ts_ns, 1795295335196916000LL);
    EXPECT_EQ(frames[1].ts_ns, 1795295335196943000LL);
    EXPECT_EQ(frames[2].ts_ns, 1795295335324911000LL);
    EXPECT_EQ(frames[2].wire_len, 170U);
    EXPECT_EQ(frames[0].link_type, LinkType::ethernet);
    EXPECT_EQ(frames[0].direction, Direction::unknown);
}

TEST(CaptureFilePcap, nanosecond_file_keeps_every_digit) {
    const auto frames = read_frames("eth_ipv4_nano.pcap");
    ASSERT_FALSE(frames.empty());
    EXPECT_EQ(frames[0].ts_ns, 1795295335324911656LL);
}

TEST(CaptureFilePcap, same_packets_in_micro_and_nano_files_agree) {
    // Two tcpdumps on one interface at once, one with --time-stamp-precision nano: each packet of the nano
    // file is in the micro file. Each packet socket takes its own timestamp of a received packet, so the
    // two may differ by a little (up to 5 µs here); most are the same instant, cut to microseconds.
    const auto micro = read_frames("eth_ipv4.pcap");
    const auto nano = read_frames("eth_ipv4_nano.pcap");
    std::size_t found = 0;
    std::size_t same_instant = 0;
    for (const OwnedFrame& n : nano) {
        for (const OwnedFrame& m : micro) {
            if (m.bytes == n.bytes && std::llabs(m.ts_ns - n.ts_ns) < 10'000) {
                ++found;
                same_instant += m.ts_ns == n.ts_ns / 1000 * 1000 ? 1 : 0;
                EXPECT_EQ(m.ts_ns % 1000, 0);
                break;
            }
        }
    }
    EXPECT_EQ(found, nano.size());
    EXPECT_GE(same_instant, nano.size() * 3 / 4);
    EXPECT_NE(nano.back().ts_ns % 1000, 0);  // nanoseconds really are there
}

TEST(CaptureFilePcap, one_interface_with_the_file_snaplen) {
    const ReadResult r = read_capture(data_path("snapped.pcap"));
    ASSERT_EQ(r.interfaces.size(), 1U);
    EXPECT_EQ(r.interfaces[0].snaplen, 96U);  // capinfos: "Packet size limit: file hdr: 96 bytes"
    EXPECT_EQ(r.interfaces[0].link_type, LinkType::ethernet);
    EXPECT_EQ(r.interfaces[0].name, "");
    for (const OwnedFrame& f : r.frames) {
        EXPECT_EQ(f.interface, 0U);
        EXPECT_LE(f.bytes.size(), 96U);
    }
}

TEST(CaptureFilePcap, cooked_link_types) {
    const ReadResult v1 = read_capture(data_path("any_sll.pcap"));
    const ReadResult v2 = read_capture(data_path("any_sll2.pcap"));
    ASSERT_FALSE(v1.error);
    ASSERT_FALSE(v2.error);
    EXPECT_EQ(v1.interfaces.at(0).link_type, LinkType::linux_sll);
    EXPECT_EQ(v2.interfaces.at(0).link_type, LinkType::linux_sll2);
}

// Raw-IP pcap files (LINKTYPE_RAW 101, which libpcap hands out as DLT_RAW 12, and LINKTYPE_IPV4/IPV6),
// written at test time from the IP packets of eth_ipv4.pcap with their Ethernet headers cut off.
TEST(CaptureFilePcap, raw_ip_link_types) {
    const auto ethernet = read_frames("eth_ipv4.pcap");
    for (const auto& [linktype, expected] : {std::pair{101U, LinkType::raw}, std::pair{228U, LinkType::ipv4}}) {
        SCOPED_TRACE(linktype);
        std::vector<std::uint8_t> file;
        auto put32 = [&file](std::uint32_t v) {
            for (int i = 0; i < 4; ++i) {
                file.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
            }
        };
        put32(0xa1b2c3d4);
        put32(0x00040002);  // version 2.4
        put32(0);
        put32(0);
        put32(65535);
        put32(linktype);
        std::vector<PacketRecord> originals;
        for (const OwnedFrame& f : ethernet) {
            if (f.bytes.size() > 14 && f.bytes[12] == 0x08 && f.bytes[13] == 0x00) {
                put32(static_cast<std::uint32_t>(f.ts_ns / 1'000'000'000));
                put32(static_cast<std::uint32_t>(f.ts_ns % 1'000'000'000 / 1000));
                put32(static_cast<std::uint32_t>(f.bytes.size() - 14));
                put32(f.wire_len - 14);
                file.insert(file.end(), f.bytes.begin() + 14, f.bytes.end());
                originals.push_back(f.record());
            }
        }
        const std::string path = (std::filesystem::temp_directory_path() / ("hoptrace-raw-" + std::to_string(getpid()) +
                                                                            "-" + std::to_string(linktype) + ".pcap"))
                                     .string();
        std::ofstream(path, std::ios::binary)
            .write(reinterpret_cast<const char*>(file.data()), static_cast<std::streamsize>(file.size()));
        const ReadResult r = read_capture(path);
        std::filesystem::remove(path);
        ASSERT_FALSE(r.error) << *r.error;
        EXPECT_EQ(r.interfaces.at(0).link_type, expected);
        ASSERT_EQ(r.frames.size(), originals.size());
        for (std::size_t i = 0; i < originals.size(); ++i) {
            const PacketRecord raw = r.frames[i].record();
            EXPECT_EQ(raw.flags, originals[i].flags);
            EXPECT_EQ(raw.src, originals[i].src);
            EXPECT_EQ(raw.ts_ns, originals[i].ts_ns);
            EXPECT_EQ(raw.fingerprint, originals[i].fingerprint);
            EXPECT_EQ(raw.l4_offset == 0 ? 0 : raw.l4_offset + 14, originals[i].l4_offset);  // 0: a later fragment
        }
    }
}

// ---- pcapng --------------------------------------------------------------------------------------------
// capinfos router.pcapng: 2 interfaces, "Name = r0" and "Name = r1", Ethernet, capture length 262144,
// nanoseconds (9).
// tshark -r router.pcapng -c 3 -T fields -e frame.number -e frame.interface_id -e frame.time_epoch -e frame.len
//   1 1 1795295347.552863862 70   2 0 1795295347.820547004 98   3 0 1795295347.820645547 98

TEST(CaptureFilePcapng, two_interfaces_from_dumpcap) {
    const ReadResult r = read_capture(data_path("router.pcapng"));
    ASSERT_FALSE(r.error) << *r.error;
    ASSERT_EQ(r.interfaces.size(), 2U);
    EXPECT_EQ(r.interfaces[0].name, "r0");
    EXPECT_EQ(r.interfaces[1].name, "r1");
    EXPECT_EQ(r.interfaces[0].link_type, LinkType::ethernet);
    EXPECT_EQ(r.interfaces[1].snaplen, 262144U);
    ASSERT_EQ(r.frames.size(), 12U);
    EXPECT_EQ(r.frames[0].interface, 1U);
    EXPECT_EQ(r.frames[0].ts_ns, 1795295347552863862LL);
    EXPECT_EQ(r.frames[0].wire_len, 70U);
    EXPECT_EQ(r.frames[1].interface, 0U);
    EXPECT_EQ(r.frames[1].ts_ns, 1795295347820547004LL);
    EXPECT_EQ(r.frames[2].ts_ns, 1795295347820645547LL);
    // dumpcap's interface statistics blocks ("Counters provided by dumpcap"): isb_ifdrop 0 on both.
    EXPECT_EQ(r.interfaces[0].kernel_drops, std::optional<std::uint64_t>{0});
    EXPECT_EQ(r.interfaces[1].kernel_drops, std::optional<std::uint64_t>{0});
}

// mergecap -w merged.pcapng nat_inside.pcap nat_outside.pcap: interface 0 in microseconds, 1 in nanoseconds.
// tshark -r merged.pcapng -T fields -e frame.number -e frame.interface_id -e frame.time_epoch
//   1 0 1795295344.992902000 …  4 1 1795295345.682229063
TEST(CaptureFilePcapng, resolution_per_interface) {
    const ReadResult r = read_capture(data_path("merged.pcapng"));
    ASSERT_FALSE(r.error) << *r.error;
    ASSERT_EQ(r.interfaces.size(), 2U);
    ASSERT_GE(r.frames.size(), 4U);
    EXPECT_EQ(r.frames[0].interface, 0U);
    EXPECT_EQ(r.frames[0].ts_ns, 1795295344992902000LL);
    EXPECT_EQ(r.frames[3].interface, 1U);
    EXPECT_EQ(r.frames[3].ts_ns, 1795295345682229063LL);
    // Each side of the merge keeps all its packets (capinfos: 30 on interface 0, 26 on interface 1).
    std::size_t on_first = 0;
    for (const OwnedFrame& f : r.frames) {
        on_first += f.interface == 0 ? 1 : 0;
    }
    EXPECT_EQ(on_first, 30U);
    EXPECT_EQ(r.frames.size(), 56U);
}

TEST(CaptureFilePcapng, same_frames_as_the_pcap_it_was_converted_from) {
    // editcap -F pcapng eth_ipv4_nano.pcap eth_ipv4_nano.pcapng
    const auto pcap = read_frames("eth_ipv4_nano.pcap");
    const auto pcapng = read_frames("eth_ipv4_nano.pcapng");
    ASSERT_EQ(pcap.size(), pcapng.size());
    for (std::size_t i = 0; i < pcap.size(); ++i) {
        EXPECT_EQ(pcap[i].ts_ns, pcapng[i].ts_ns);
        EXPECT_EQ(pcap[i].wire_len, pcapng[i].wire_len);
        EXPECT_EQ(pcap[i].bytes, pcapng[i].bytes);
    }
}

// synthetic.pcapng (make_synthetic.py): a big-endian section, then a little-endian one.
// Section 1, tshark -r synthetic.pcapng -T fields -e frame.interface_name -e frame.time_epoch
//   -e frame.packet_flags_direction (its 2nd "frame" is the custom block, which we skip):
//   be0 1700000005.500000953 0x00000001;  be0 1700000006.000002861 0x00000002
//   (by hand: 5 * 2^20 + 2^19 + 1 units of 2^-20 s = 5.5 s + 953.67 ns, + if_tsoffset 1700000000 s)
// Section 2: tshark 4.0 reads it wrong (it does not restart interface ids at a section header, so it
// uses be0's resolution for le0's packets); the expected values are those make_synthetic.py wrote:
//   le1 EPB 1700000007000001 µs; le0 OPB 8123456789999 ps + 1700000000 s, pack_flags outbound;
//   le0 EPB 9000000000001 ps + 1700000000 s, epb_flags inbound.
TEST(CaptureFilePcapng, byte_orders_sections_resolutions_offsets_and_flags) {
    const ReadResult r = read_capture(data_path("synthetic.pcapng"));
    ASSERT_FALSE(r.error) << *r.error;
    ASSERT_EQ(r.interfaces.size(), 3U);
    EXPECT_EQ(r.interfaces[0].name, "be0");
    EXPECT_EQ(r.interfaces[0].description, "big-endian section, 2^-20 s units, tsoffset");
    EXPECT_EQ(r.interfaces[1].name, "le0");
    EXPECT_EQ(r.interfaces[1].link_type, LinkType::raw);
    EXPECT_EQ(r.interfaces[2].name, "le1");
    EXPECT_EQ(r.interfaces[2].snaplen, 65535U);
    ASSERT_EQ(r.frames.size(), 5U);  // NRB, custom block and ISB skipped
    // The ISB's isb_ifdrop (3, as make_synthetic.py wrote it) is be0's kernel drop count; the others have none.
    EXPECT_EQ(r.interfaces[0].kernel_drops, std::optional<std::uint64_t>{3});
    EXPECT_FALSE(r.interfaces[1].kernel_drops.has_value());

    EXPECT_EQ(r.frames[0].interface, 0U);
    EXPECT_EQ(r.frames[0].ts_ns, 1700000005500000953LL);
    EXPECT_EQ(r.frames[0].direction, Direction::inbound);
    EXPECT_EQ(r.frames[1].ts_ns, 1700000006000002861LL);
    EXPECT_EQ(r.frames[1].direction, Direction::outbound);

    EXPECT_EQ(r.frames[2].interface, 2U);  // id 1 of the second section
    EXPECT_EQ(r.frames[2].ts_ns, 1700000007000001000LL);
    EXPECT_EQ(r.frames[2].direction, Direction::unknown);
    EXPECT_EQ(r.frames[3].interface, 1U);
    EXPECT_EQ(r.frames[3].link_type, LinkType::raw);
    EXPECT_EQ(r.frames[3].ts_ns, 1700000008123456789LL);  // picoseconds truncated to ns
    EXPECT_EQ(r.frames[3].direction, Direction::outbound);
    EXPECT_EQ(r.frames[4].ts_ns, 1700000009000000000LL);
    EXPECT_EQ(r.frames[4].direction, Direction::inbound);

    // The frames are the ones taken from eth_ipv4.pcap; raw IP ones without their Ethernet header.
    const PacketRecord raw = r.frames[3].record();
    EXPECT_EQ(raw.ip_version, 4);
    EXPECT_EQ(raw.flags, 0U);
    EXPECT_EQ(raw.direction, Direction::outbound);
}

TEST(CaptureFilePcapng, simple_packet_block_is_refused) {
    const ReadResult r = read_capture(data_path("synthetic_spb.pcapng"));
    EXPECT_EQ(r.frames.size(), 1U);  // the enhanced packet block before it
    ASSERT_TRUE(r.error);
    EXPECT_TRUE(contains(*r.error, "synthetic_spb.pcapng: simple packet block")) << *r.error;
    EXPECT_TRUE(contains(*r.error, "no timestamp")) << *r.error;
    EXPECT_TRUE(contains(*r.error, "after 1 packets")) << *r.error;
}

// time_2038.pcap (make_edge_cases.py): the seconds field of a classic pcap record is unsigned 32-bit, so
// 2^31 s is 2038-01-19 03:14:08 UTC, not 1901. The values are the script's; tshark agrees:
// tshark -r time_2038.pcap -T fields -e frame.time_epoch
//   2147483648.000001000  2147483649.000002000  4294967295.999999000
TEST(CaptureFilePcap, seconds_from_2038_on_are_unsigned) {
    const auto frames = read_frames("time_2038.pcap");
    ASSERT_EQ(frames.size(), 3U);
    EXPECT_EQ(frames[0].ts_ns, 2147483648LL * 1'000'000'000 + 1'000);
    EXPECT_EQ(frames[1].ts_ns, 2147483649LL * 1'000'000'000 + 2'000);
    EXPECT_EQ(frames[2].ts_ns, 4294967295LL * 1'000'000'000 + 999'999'000);
}

// pcapng_1_1.pcapng (make_edge_cases.py): a section header of version 1.1.
// tshark -r pcapng_1_1.pcapng: "(pcapng: unknown SHB version 1.1)"; tcpdump: "unsupported pcapng savefile version 1.1"
TEST(CaptureFilePcapng, version_1_1_is_refused_like_libpcap_and_tshark) {
    const std::string path = data_path("pcapng_1_1.pcapng");
    const auto f = CaptureFile::open(path);
    ASSERT_FALSE(f);
    EXPECT_TRUE(contains(f.error(), path + ": unsupported pcapng version 1.1")) << f.error();
    EXPECT_EQ(f.error().find('\n'), std::string::npos) << f.error();
}

// ---- Bad files -----------------------------------------------------------------------------------------

class CaptureFileErrors : public testing::Test {
protected:
    void SetUp() override {
        std::string pattern = (std::filesystem::temp_directory_path() / "hoptrace-tracer-XXXXXX").string();
        ASSERT_NE(mkdtemp(pattern.data()), nullptr);
        m_dir = pattern;
    }
    void TearDown() override { std::filesystem::remove_all(m_dir); }

    std::string write(const std::string& name, const std::vector<std::uint8_t>& bytes) const {
        const std::string path = (m_dir / name).string();
        std::ofstream out(path, std::ios::binary);
        out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
        return path;
    }

    static void set_le32(std::vector<std::uint8_t>& b, std::size_t offset, std::uint32_t v) {
        for (int i = 0; i < 4; ++i) {
            b[offset + i] = static_cast<std::uint8_t>(v >> (8 * i));
        }
    }

    std::filesystem::path m_dir;
};

TEST_F(CaptureFileErrors, missing_file) {
    const std::string path = (m_dir / "nope.pcap").string();
    const auto f = CaptureFile::open(path);
    ASSERT_FALSE(f);
    EXPECT_EQ(f.error(), path + ": No such file or directory");
}

TEST_F(CaptureFileErrors, directory) {
    const auto f = CaptureFile::open(m_dir.string());
    ASSERT_FALSE(f);
    EXPECT_EQ(f.error(), m_dir.string() + ": Is a directory");
}

TEST_F(CaptureFileErrors, empty_file) {
    const std::string path = write("empty.pcap", {});
    const auto f = CaptureFile::open(path);
    ASSERT_FALSE(f);
    EXPECT_EQ(f.error(), path + ": empty file");
}

TEST_F(CaptureFileErrors, not_a_capture_file) {
    const std::string path = data_path("not_a_capture.txt");
    const auto f = CaptureFile::open(path);
    ASSERT_FALSE(f);
    EXPECT_EQ(f.error(), path + ": not a pcap or pcapng file");

    const std::string tiny = write("tiny", {0xd4, 0xc3, 0xb2});  // three bytes of a pcap magic
    ASSERT_FALSE(CaptureFile::open(tiny));
    EXPECT_EQ(CaptureFile::open(tiny).error(), tiny + ": not a pcap or pcapng file");
}

TEST_F(CaptureFileErrors, pcap_file_header_cut) {
    auto bytes = file_bytes(data_path("eth_ipv4.pcap"));
    bytes.resize(10);
    const std::string path = write("header.pcap", bytes);
    const auto f = CaptureFile::open(path);
    ASSERT_FALSE(f);
    EXPECT_EQ(f.error(), path + ": truncated pcap file header");
}

// head -c $((size - 20)) eth_ipv4.pcap > truncated.pcap
// capinfos truncated.pcap: "An error occurred after reading 29 packets"
TEST_F(CaptureFileErrors, truncated_pcap_delivers_every_whole_packet) {
    const std::string path = data_path("truncated.pcap");
    auto f = CaptureFile::open(path);
    ASSERT_TRUE(f) << f.error();
    FileFrame ff;
    std::size_t n = 0;
    tl::expected<bool, std::string> more;
    while ((more = (*f)->next(ff)) && *more) {
        ++n;
    }
    EXPECT_EQ(n, 29U);
    ASSERT_FALSE(more);
    EXPECT_EQ(more.error(), path + ": truncated packet record after 29 packets");
    // It stays an error.
    const auto again = (*f)->next(ff);
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error(), more.error());
    EXPECT_EQ((*f)->frames_read(), 29U);
}

// truncated.pcapng: cut 10 bytes into the data of the last of 12 packet blocks.
// capinfos truncated.pcapng: "An error occurred after reading 11 packets"
TEST_F(CaptureFileErrors, truncated_pcapng_delivers_every_whole_packet) {
    const std::string path = data_path("truncated.pcapng");
    const ReadResult r = read_capture(path);
    EXPECT_EQ(r.frames.size(), 11U);
    ASSERT_TRUE(r.error);
    EXPECT_TRUE(contains(*r.error, path + ": truncated block at offset ")) << *r.error;
    EXPECT_TRUE(contains(*r.error, "after 11 packets")) << *r.error;
}

// corrupt_caplen.pcap: the second record's captured length patched to 0x7fffffff.
// capinfos corrupt_caplen.pcap: "An error occurred after reading 1 packets"
TEST_F(CaptureFileErrors, corrupt_pcap_record) {
    const std::string path = data_path("corrupt_caplen.pcap");
    const ReadResult r = read_capture(path);
    EXPECT_EQ(r.frames.size(), 1U);
    ASSERT_TRUE(r.error);
    EXPECT_TRUE(contains(*r.error, path + ": corrupt packet record after 1 packets")) << *r.error;
    EXPECT_TRUE(contains(*r.error, "2147483647")) << *r.error;  // libpcap names the bad length
}

// corrupt_blocklen.pcapng: the third packet block's trailing length patched.
// capinfos corrupt_blocklen.pcapng: "An error occurred after reading 2 packets … total block lengths
// (first 132 and second 136) don't match"
TEST_F(CaptureFileErrors, pcapng_trailing_length_mismatch) {
    const std::string path = data_path("corrupt_blocklen.pcapng");
    const ReadResult r = read_capture(path);
    EXPECT_EQ(r.frames.size(), 2U);
    ASSERT_TRUE(r.error);
    EXPECT_TRUE(contains(*r.error, path + ": block at offset ")) << *r.error;
    EXPECT_TRUE(contains(*r.error, "trailing length 136 but leading length 132 after 2 packets")) << *r.error;
}

TEST_F(CaptureFileErrors, pcapng_block_lengths_are_checked) {
    // router.pcapng blocks (pcapng_blocks.py): SHB 0 (180), IDB 180 (68), IDB 248 (68), EPB 316 …
    const auto good = file_bytes(data_path("router.pcapng"));
    ASSERT_GT(good.size(), 400U);
    struct Case {
        const char* name;
        std::uint32_t length;
        const char* expected;
    };
    for (const Case& c : {Case{"unaligned", 122, "invalid block length 122 at offset 316 after 0 packets"},
                          Case{"short", 8, "invalid block length 8 at offset 316 after 0 packets"},
                          Case{"huge", 0x7ffffff0, "truncated block at offset 316 (length 2147483632"}}) {
        SCOPED_TRACE(c.name);
        auto bytes = good;
        set_le32(bytes, 316 + 4, c.length);
        const std::string path = write(std::string(c.name) + ".pcapng", bytes);
        const ReadResult r = read_capture(path);
        EXPECT_TRUE(r.frames.empty());
        ASSERT_TRUE(r.error);
        EXPECT_TRUE(contains(*r.error, path + ": " + c.expected)) << *r.error;
    }
}

TEST_F(CaptureFileErrors, pcapng_packet_on_an_undescribed_interface) {
    auto bytes = file_bytes(data_path("router.pcapng"));
    set_le32(bytes, 316 + 8, 2);  // the first packet block names interface 2 of 2
    const std::string path = write("iface.pcapng", bytes);
    const ReadResult r = read_capture(path);
    ASSERT_TRUE(r.error);
    EXPECT_TRUE(contains(*r.error, "names interface 2, but the section describes 2 after 0 packets")) << *r.error;
}

TEST_F(CaptureFileErrors, pcapng_captured_length_past_the_block) {
    auto bytes = file_bytes(data_path("router.pcapng"));
    set_le32(bytes, 316 + 20, 1000);  // captured length of the first packet block (120 bytes long)
    const std::string path = write("caplen.pcapng", bytes);
    const ReadResult r = read_capture(path);
    ASSERT_TRUE(r.error);
    EXPECT_TRUE(contains(*r.error, "packet data (1000 bytes) runs past its block")) << *r.error;
}

TEST_F(CaptureFileErrors, pcapng_bad_byte_order_magic) {
    auto bytes = file_bytes(data_path("router.pcapng"));
    bytes[8] = 0;
    const std::string path = write("bom.pcapng", bytes);
    const auto f = CaptureFile::open(path);
    ASSERT_FALSE(f);
    EXPECT_TRUE(contains(f.error(), path + ": bad byte-order magic")) << f.error();
}

TEST_F(CaptureFileErrors, pcapng_cut_inside_the_section_header) {
    auto bytes = file_bytes(data_path("router.pcapng"));
    bytes.resize(100);
    const std::string path = write("shb.pcapng", bytes);
    const auto f = CaptureFile::open(path);
    ASSERT_FALSE(f);
    EXPECT_TRUE(contains(f.error(), path + ": truncated block at offset 0")) << f.error();
}

// editcap -T user0 eth_ipv4.pcap unsupported_linktype.pcap (and -F pcapng for the pcapng one)
// capinfos: "Encapsulation = USER 0 (45 - user0)", link type 147 in the file
TEST_F(CaptureFileErrors, unsupported_link_type_pcap) {
    const std::string path = data_path("unsupported_linktype.pcap");
    const auto f = CaptureFile::open(path);
    ASSERT_FALSE(f);
    EXPECT_EQ(f.error(), path + ": unsupported link type 147 (supported: Ethernet, Linux cooked v1/v2, raw IP)");
}

TEST_F(CaptureFileErrors, unsupported_link_type_pcapng) {
    const std::string path = data_path("unsupported_linktype.pcapng");
    const ReadResult r = read_capture(path);
    ASSERT_EQ(r.interfaces.size(), 1U);
    EXPECT_EQ(static_cast<std::uint32_t>(r.interfaces[0].link_type), 147U);
    EXPECT_TRUE(r.frames.empty());
    ASSERT_TRUE(r.error);
    EXPECT_EQ(*r.error, path +
                            ": unsupported link type 147 (supported: Ethernet, Linux cooked v1/v2, raw IP) on "
                            "interface 0 after 0 packets");
}

TEST(CaptureFileEnd, end_of_file_stays_the_end) {
    auto f = CaptureFile::open(data_path("any_sll.pcap"));
    ASSERT_TRUE(f);
    FileFrame ff;
    std::size_t n = 0;
    while ((*f)->next(ff).value_or(false)) {
        ++n;
    }
    EXPECT_EQ(n, 10U);
    const auto again = (*f)->next(ff);
    ASSERT_TRUE(again);
    EXPECT_FALSE(*again);
}

}  // namespace
}  // namespace hoptrace
