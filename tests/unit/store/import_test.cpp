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

}  // namespace
}  // namespace hoptrace::store
