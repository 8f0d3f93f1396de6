#include "store/containers.hpp"

#include <string>
#include <vector>

namespace hoptrace::store {
namespace {

std::string joined(const std::vector<std::string>& words) {
    std::string out;
    for (const auto& w : words) out += (out.empty() ? "" : " ") + w;
    return out;
}

std::vector<std::string> split(const std::string& text) {
    std::vector<std::string> out;
    std::size_t start = 0;
    while (start < text.size()) {
        const auto end = std::min(text.find(' ', start), text.size());
        if (end > start) out.push_back(text.substr(start, end - start));
        start = end + 1;
    }
    return out;
}

}  // namespace

void add_container(Database& db, std::int64_t point_id, const ContainerInfo& info) {
    auto st = db.prepare(
        "INSERT OR REPLACE INTO containers (point_id, name, id, image, networks, ports) "
        "VALUES (?, ?, ?, ?, ?, ?)");
    st.bind(1, point_id).bind(2, info.name).bind(3, info.id).bind(4, info.image);
    st.bind(5, joined(info.networks)).bind(6, joined(info.ports));
    st.run();
}

std::map<std::int64_t, ContainerInfo> containers(const Database& db) {
    std::map<std::int64_t, ContainerInfo> out;
    auto exists = db.prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'containers'");
    if (!exists.step()) return out;
    auto q = db.prepare("SELECT point_id, name, id, image, networks, ports FROM containers");
    while (q.step())
        out[q.column_int(0)] = {q.column_text(1), q.column_text(2), q.column_text(3), split(q.column_text(4)),
                                split(q.column_text(5))};
    return out;
}

}  // namespace hoptrace::store
