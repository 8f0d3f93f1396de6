#pragma once
// Importing a capture file into the store: one point per file, or per interface for multi-interface pcapng
// files and Linux cooked v2 (`tcpdump -i any -y LINUX_SLL2`) captures. Used by `hoptrace import` and tests.

#include "store/database.hpp"
#include "store/writer.hpp"

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace hoptrace::store {

struct ImportSpec {
    std::string name;  // the point's name; the prefix "NAME/…" when the file holds several interfaces
    std::string path;
    // Names for Linux cooked v2 interface indexes (from the namespace the capture was taken in); an index
    // without a name becomes "NAME/ifN".
    std::map<std::uint32_t, std::string> link_names;
};

struct ImportResult {
    std::uint64_t frames = 0;
    std::vector<std::string> points;   // created, in order of first packet
    std::optional<std::string> error;  // one line naming the file; frames read before it are kept
};

// Reads `spec.path` frame by frame into `writer`. Its points are stored not `complete` until every row is committed
// at the end (an import killed before leaves them so, and `report` says so). `progress` (may be empty) is called now
// and then with the frame count. Never throws for problems with the file; store errors propagate.
ImportResult import_file(Database& db, Writer& writer, const ImportSpec& spec,
                         const std::function<void(std::uint64_t frames)>& progress = {});

// --replace: removes the point `name`, and the points `name/…` of a file of several interfaces, with their packets
// (in one transaction). Journeys and everything correlate derived are stale afterwards: correlate again. Returns the
// names removed.
std::vector<std::string> remove_points(Database& db, const std::string& name);

// The NAME of the `NAME=FILE` that made point `p`: its name without the `/IFNAME` (`/ifN`, `/IFNAME#k`) that a file
// of several interfaces, or of `-i any`, adds to it. What `--replace` takes to import that file again.
[[nodiscard]] std::string import_name(const Point& p);

}  // namespace hoptrace::store
