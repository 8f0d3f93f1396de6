#include "store/import.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <tuple>

#include "tracer/capture_file.hpp"
#include "tracer/dissect.hpp"

namespace hoptrace::store {
namespace {

// When the file was created and last written (statx), in ns since the epoch; nullopt where the filesystem does not
// say. A capture tool creates its file when it starts and writes it until it stops: the times bound the window.
std::pair<std::optional<std::int64_t>, std::optional<std::int64_t>> file_times(const std::string& path) {
    struct statx st {};
    if (statx(AT_FDCWD, path.c_str(), 0, STATX_BTIME | STATX_MTIME, &st) != 0) return {};
    auto ns = [](const struct statx_timestamp& t) { return std::int64_t{t.tv_sec} * 1'000'000'000 + t.tv_nsec; };
    std::optional<std::int64_t> born;
    if ((st.stx_mask & STATX_BTIME) != 0) born = ns(st.stx_btime);
    std::optional<std::int64_t> written;
    if ((st.stx_mask & STATX_MTIME) != 0) written = ns(st.stx_mtime);
    return {born, written};
}

// Deletes the points `ids` and their packets, in the caller's transaction.
void delete_points(Database& db, const std::vector<std::int64_t>& ids) {
    auto rows = db.prepare("DELETE FROM packets WHERE point_id = ?");
    auto point = db.prepare("DELETE FROM points WHERE id = ?");
    for (const std::int64_t id : ids) {
        rows.bind(1, id);
        rows.run();
        rows.reset();
        point.bind(1, id);
        point.run();
        point.reset();
    }
}

}  // namespace

ImportResult import_file(Database& db, Writer& writer, const ImportSpec& spec,
                         const std::function<void(std::uint64_t)>& progress) {
    ImportResult result;
    auto opened = CaptureFile::open(spec.path);
    if (!opened) {
        result.error = opened.error();
        return result;
    }
    CaptureFile& file = **opened;

    std::map<std::pair<std::uint32_t, std::uint32_t>, std::uint32_t> point_of;  // (interface, ifindex) -> id
    // The point name of a pcap/pcapng interface with the interfaces known so far: NAME alone for a file of one
    // interface, NAME/IFNAME (NAME/IFNAME#k when several share a name, as in merged captures where every
    // container has an eth0) for several.
    auto interface_name = [&](std::uint32_t interface) {
        std::string name = spec.name;
        if (file.interfaces().size() <= 1) return name;
        const FileInterface& iface = file.interfaces().at(interface);
        bool repeated = false;
        for (std::size_t k = 0; k < file.interfaces().size(); ++k)
            repeated = repeated || (k != interface && file.interfaces()[k].name == iface.name);
        std::string label = iface.name.empty() ? "if" + std::to_string(interface) : iface.name;
        if (repeated && !iface.name.empty()) label.append("#").append(std::to_string(interface));
        return name.append("/").append(label);
    };
    std::map<std::uint32_t, std::size_t> listed_at;  // point id -> its index in result.points
    // Returns nullopt (and sets result.error) when the point's name is already taken.
    auto point_for = [&](std::uint32_t interface, std::uint32_t ifindex) -> std::optional<std::uint32_t> {
        const auto key = std::pair{interface, ifindex};
        if (auto it = point_of.find(key); it != point_of.end()) return it->second;
        const FileInterface& iface = file.interfaces().at(interface);
        Point p;
        p.name = spec.name;
        p.ifname = iface.name;
        if (iface.link_type == LinkType::linux_sll2) {
            const auto named = spec.link_names.find(ifindex);
            p.ifname = named != spec.link_names.end() ? named->second : "";
            p.name.append("/").append(p.ifname.empty() ? "if" + std::to_string(ifindex) : p.ifname);
            p.ifindex = ifindex;
        } else {
            p.name = interface_name(interface);
        }
        p.link_type = static_cast<std::uint32_t>(iface.link_type);
        p.source = spec.path;
        p.complete = false;  // until the file is read to its end
        std::tie(p.file_born_ns, p.file_written_ns) = file_times(spec.path);
        if (const auto existing = db.find_point(p.name)) {
            result.error =
                spec.path + ": a point named '" + p.name + "' is already in " + db.path() +
                (existing->complete
                     ? "; name this file's point with NAME=" + spec.path + ", or replace it with --replace"
                     : ", cut short by an import that was interrupted after " + std::to_string(existing->packets) +
                           " packets; import the file again with --replace");
            return std::nullopt;
        }
        const auto id = static_cast<std::uint32_t>(db.add_point(p));
        result.points.push_back(p.name);
        point_of.emplace(key, id);
        listed_at[id] = result.points.size() - 1;
        return id;
    };

    FileFrame ff;
    for (;;) {
        auto more = file.next(ff);
        if (!more) {
            result.error = more.error();
            break;
        }
        if (!*more) break;
        PacketRecord record = dissect(ff.frame);
        const auto point = point_for(ff.interface, record.ifindex);
        if (!point) {
            // Half a file would look like a file read to its end: its points go, with what they got.
            writer.flush();
            std::vector<std::int64_t> ids;
            for (const auto& entry : point_of) ids.push_back(entry.second);
            Transaction txn(db);
            delete_points(db, ids);
            txn.commit();
            result.points.clear();
            result.frames = 0;
            *result.error += " (nothing of this file was kept)";
            return result;
        }
        record.point_id = *point;
        writer.add(record, ff.frame.bytes);
        ++result.frames;
        if (progress && (result.frames & 0x3FFF) == 0) progress(result.frames);
    }
    // An empty capture is still a point, so that the report shows it saw nothing.
    if (result.points.empty() && !result.error && !file.interfaces().empty()) point_for(0, 0);
    // A pcapng section that described more interfaces after the first packets changes how the earlier points
    // are named: give them the names they would have had had every interface been known from the start.
    for (const auto& [key, id] : point_of) {
        if (file.interfaces().at(key.first).link_type == LinkType::linux_sll2) continue;
        const std::string want = interface_name(key.first);
        std::string& have = result.points[listed_at.at(id)];
        if (have == want || db.find_point(want)) continue;
        auto rename = db.prepare("UPDATE points SET name = ? WHERE id = ?");
        rename.bind(1, want).bind(2, std::int64_t{id});
        rename.run();
        have = want;
    }
    // Every row of the file is committed: only now are its points complete (a kill before this leaves them not).
    writer.flush();
    auto mark = db.prepare("UPDATE points SET complete = 1 WHERE id = ?");
    for (const auto& [key, id] : point_of) {
        mark.bind(1, std::int64_t{id});
        mark.run();
        mark.reset();
    }
    // The drops a pcapng writer recorded per interface are the point's kernel drops: the evidence that says
    // whether a packet missing there was lost by the network or by the capture. An interface split into
    // several points (tcpdump -i any, by ifindex) keeps its count to itself: it cannot be divided.
    std::map<std::uint32_t, std::vector<std::uint32_t>> points_of_interface;
    for (const auto& [key, id] : point_of) points_of_interface[key.first].push_back(id);
    auto set_drops = db.prepare("UPDATE points SET kernel_drops = ? WHERE id = ?");
    for (const auto& [interface, ids] : points_of_interface) {
        const auto& drops = file.interfaces().at(interface).kernel_drops;
        if (!drops || ids.size() != 1) continue;
        set_drops.bind(1, static_cast<std::int64_t>(*drops)).bind(2, std::int64_t{ids.front()});
        set_drops.run();
        set_drops.reset();
    }
    return result;
}

std::string import_name(const Point& p) {
    const auto slash = p.name.rfind('/');
    if (slash == std::string::npos) return p.name;
    const std::string_view label = std::string_view(p.name).substr(slash + 1);
    const bool named = !p.ifname.empty() && (label == p.ifname || label.starts_with(p.ifname + "#"));
    const bool numbered = label.size() > 2 && label.starts_with("if") &&
                          label.find_first_not_of("0123456789", 2) == std::string_view::npos;
    return named || numbered ? p.name.substr(0, slash) : p.name;
}

std::vector<std::string> remove_points(Database& db, const std::string& name) {
    std::vector<std::string> removed;
    Transaction txn(db);
    auto find =
        db.prepare("SELECT id, name FROM points WHERE name = ?1 OR substr(name, 1, length(?1) + 1) = ?1 || '/'");
    find.bind(1, name);
    std::vector<std::int64_t> ids;
    while (find.step()) {
        ids.push_back(find.column_int(0));
        removed.push_back(find.column_text(1));
    }
    // What correlate derived from the old packets is no longer true: the database is "not correlated yet" again.
    if (!ids.empty()) db.exec("DELETE FROM meta WHERE key = 'correlated_ns'");
    delete_points(db, ids);
    txn.commit();
    return removed;
}

}  // namespace hoptrace::store
