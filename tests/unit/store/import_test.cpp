#include "store/import.hpp"

#include "store/database.hpp"
#include "store/writer.hpp"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <utility>
#include <vector>

namespace hoptrace::store {
namespace {

const std::string k_tracer = std::string(HOPTRACE_TEST_DATA) + "/tracer/";

// What --replace and the "incomplete" advice need: the NAME each file was imported as, whatever points it made —
// one (a pcap), NAME/IFNAME (pcapng of several interfaces, merged.pcapng's repeated eth0 as NAME/eth0#k, a
// nameless one as NAME/ifK), NAME/ifN (tcpdump -i any in Linux cooked v2). Names with a slash of their own stay.
TEST(Import, import_name_gives_back_the_name_each_file_was_imported_as) {
    const std::vector<std::pair<std::string, std::string>> specs{
        {"single", "eth_ipv4.pcap"},   {"multi", "synthetic.pcapng"}, {"merged", "merged.pcapng"},
        {"router", "router.pcapng"},   {"any", "any_sll2.pcap"},      {"lab/uplink", "eth_ipv6.pcap"},
        {"lab/multi", "router.pcapng"}};
    Database db = Database::open_memory();
    {
        Writer writer(db);
        for (const auto& [name, file] : specs) {
            const ImportResult r = import_file(db, writer, {name, k_tracer + file, {}});
            ASSERT_FALSE(r.error) << *r.error;
        }
        writer.close();
    }
    std::set<std::string> given;
    for (const auto& spec : specs) given.insert(spec.first);
    std::set<std::string> derived;
    std::size_t points = 0;
    for (const Point& p : db.points()) {
        ++points;
        const std::string name = import_name(p);
        EXPECT_TRUE(given.contains(name)) << p.name << " (ifname '" << p.ifname << "') gave '" << name << "'";
        derived.insert(name);
    }
    EXPECT_EQ(derived, given);
    EXPECT_GT(points, specs.size()) << "some files made several points";
}

// router.pcapng (dumpcap) has two interfaces, r0 and r1; its first packet is r1's, its second r0's (tshark says).
// A point x/r0 already there makes the import of x=router.pcapng fail on that second packet, after x/r1 was made:
// nothing of the file may stay, or its x/r1 would look like a whole interface.
TEST(Import, a_name_taken_in_the_middle_of_a_file_keeps_nothing_of_it) {
    Database db = Database::open_memory();
    Point taken;
    taken.name = "x/r0";
    taken.complete = true;
    db.add_point(taken);
    Writer writer(db);
    const ImportResult r = import_file(db, writer, {"x", k_tracer + "router.pcapng", {}});
    writer.close();
    ASSERT_TRUE(r.error);
    EXPECT_NE(r.error->find("'x/r0'"), std::string::npos) << *r.error;
    EXPECT_NE(r.error->find("nothing of this file was kept"), std::string::npos) << *r.error;
    EXPECT_TRUE(r.points.empty());
    std::vector<std::string> names;
    for (const Point& p : db.points()) names.push_back(p.name);
    EXPECT_EQ(names, std::vector<std::string>{"x/r0"});
    Statement q = db.prepare("SELECT count(*) FROM packets");
    ASSERT_TRUE(q.step());
    EXPECT_EQ(q.column_int(0), 0);
}

}  // namespace
}  // namespace hoptrace::store
