#include "store/database.hpp"
#include "store/import.hpp"
#include "store/spool.hpp"
#include "store/writer.hpp"

#include <gtest/gtest.h>
#include <pcap/pcap.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace hoptrace::store {
namespace {

const std::string k_lab = std::string(HOPTRACE_TEST_DATA) + "/lab/";

// The reference, read with libpcap itself: every frame's timestamp in ns, in file order.
std::vector<std::int64_t> frame_times(const std::string& path) {
    char errbuf[PCAP_ERRBUF_SIZE] = {};
    pcap_t* p = pcap_open_offline_with_tstamp_precision(path.c_str(), PCAP_TSTAMP_PRECISION_NANO, errbuf);
    EXPECT_NE(p, nullptr) << errbuf;
    std::vector<std::int64_t> out;
    if (p == nullptr) return out;
    pcap_pkthdr* header = nullptr;
    const u_char* data = nullptr;
    while (pcap_next_ex(p, &header, &data) == 1)
        out.push_back(static_cast<std::int64_t>(header->ts.tv_sec) * 1'000'000'000 + header->ts.tv_usec);
    pcap_close(p);
    return out;
}

// Three lab files stand for a capture's live points, a fourth for a file imported into the same database later:
// the cut drops the live points' packets after it, never the imported point's.
TEST(SpoolCut, a_pending_cut_drops_the_live_points_later_packets_recounts_them_and_is_applied_once) {
    const std::vector<std::string> live{"c1-eth0", "docker0", "uplink"};
    const std::string imported = "c2-eth0";
    Database db = Database::open_memory();
    {
        Writer writer(db);
        for (const auto& f : live) {
            const ImportResult r = import_file(db, writer, {f, k_lab + f + ".pcap", {}});
            ASSERT_FALSE(r.error) << *r.error;
        }
        const ImportResult r = import_file(db, writer, {imported, k_lab + imported + ".pcap", {}});
        ASSERT_FALSE(r.error) << *r.error;
        writer.close();
    }
    db.exec("UPDATE points SET source = 'live' WHERE name IN ('c1-eth0', 'docker0', 'uplink')");
    // The cut: the median timestamp of the first file's frames, so every point keeps some and loses some.
    auto first = frame_times(k_lab + live[0] + ".pcap");
    ASSERT_GT(first.size(), 4U);
    const std::int64_t cut = first[first.size() / 2];
    std::map<std::string, std::int64_t> expected;
    for (const auto& f : live)
        for (const std::int64_t ts : frame_times(k_lab + f + ".pcap"))
            if (ts <= cut) ++expected[f];
    expected[imported] = static_cast<std::int64_t>(frame_times(k_lab + imported + ".pcap").size());
    std::int64_t imported_after_cut = 0;
    for (const std::int64_t ts : frame_times(k_lab + imported + ".pcap")) imported_after_cut += ts > cut ? 1 : 0;
    ASSERT_GT(imported_after_cut, 0) << "the imported file must have packets past the cut for this to test anything";

    EXPECT_FALSE(apply_spool_cut(db)) << "no cut pending: nothing to do";
    db.set_meta(k_meta_spool_cut, std::to_string(cut));
    {
        Transaction txn(db);
        EXPECT_TRUE(apply_spool_cut(db));
        txn.commit();
    }

    std::map<std::string, std::int64_t> counted;
    std::map<std::string, std::int64_t> stored;
    for (const Point& p : db.points()) {
        counted[p.name] = p.packets;
        Statement q = db.prepare("SELECT count(*) FROM packets WHERE point_id = ?");
        q.bind(1, p.id);
        ASSERT_TRUE(q.step());
        stored[p.name] = q.column_int(0);
    }
    EXPECT_EQ(stored, expected);
    EXPECT_EQ(counted, expected) << "points.packets recounted";
    EXPECT_FALSE(db.meta(k_meta_spool_cut)) << "the key goes with the cut";
    EXPECT_FALSE(apply_spool_cut(db));
}

}  // namespace
}  // namespace hoptrace::store
