#include "store/containers.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace hoptrace::store {
namespace {

std::string joined(const std::vector<std::string>& words) {
    std::string out;
    for (const auto& w : words) out += (out.empty() ? "" : " ") + w;
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

bool has_table(const Database& db, const char* name) {
    auto exists = db.prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?");
    exists.bind(1, std::string_view(name));
    return exists.step();
}

void add_proxies(Database& db, const std::vector<DockerProxy>& proxies) {
    auto st = db.prepare(
        "INSERT INTO proxies (pid, proto, host_ip, host_port, container_ip, container_port) "
        "VALUES (?, ?, ?, ?, ?, ?)");
    Transaction txn(db);
    for (const DockerProxy& p : proxies) {
        st.bind(1, std::int64_t{p.pid}).bind(2, p.proto).bind(3, p.host_ip).bind(4, std::int64_t{p.host_port});
        st.bind(5, p.container_ip).bind(6, std::int64_t{p.container_port});
        st.run();
        st.reset();
    }
    txn.commit();
}

std::vector<DockerProxy> proxies(const Database& db) {
    std::vector<DockerProxy> out;
    if (!has_table(db, "proxies")) return out;
    auto q =
        db.prepare("SELECT pid, proto, host_ip, host_port, container_ip, container_port FROM proxies ORDER BY pid");
    while (q.step())
        out.push_back({static_cast<pid_t>(q.column_int(0)), q.column_text(1), q.column_text(2),
                       static_cast<std::uint16_t>(q.column_int(3)), q.column_text(4),
                       static_cast<std::uint16_t>(q.column_int(5))});
    return out;
}

std::map<std::int64_t, ContainerInfo> containers(const Database& db) {
    std::map<std::int64_t, ContainerInfo> out;
    if (!has_table(db, "containers")) return out;
    auto q = db.prepare("SELECT point_id, name, id, image, networks, ports FROM containers");
    while (q.step())
        out[q.column_int(0)] = {q.column_text(1), q.column_text(2), q.column_text(3), split_words(q.column_text(4)),
                                split_words(q.column_text(5))};
    return out;
}

}  // namespace hoptrace::store
