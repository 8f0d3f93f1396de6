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

namespace {

// One file's import: its points as their interfaces (and, for `-i any`, ifindexes) appear, its frames through the
// writer, and what is known only at the end (late names, completeness, the writer's drop counts).
class FileImport {
public:
    FileImport(Database& db, Writer& writer, const ImportSpec& spec, CaptureFile& file)
        : m_db(db), m_writer(writer), m_spec(spec), m_file(file) {}

    ImportResult run(const std::function<void(std::uint64_t)>& progress) {
        if (!read_frames(progress)) {
            discard();
            return std::move(m_result);
        }
        // An empty capture is still a point, so that the report shows it saw nothing.
        if (m_result.points.empty() && !m_result.error && !m_file.interfaces().empty()) point_for(0, 0);
        rename_late_points();
        mark_complete();
        set_kernel_drops();
        return std::move(m_result);
    }

private:
    // Every frame until the end or the first error; false when a point's name was taken (the import stops).
    bool read_frames(const std::function<void(std::uint64_t)>& progress) {
        FileFrame ff;
        for (;;) {
            auto more = m_file.next(ff);
            if (!more) {
                m_result.error = more.error();
                return true;
            }
            if (!*more) return true;
            PacketRecord record = dissect(ff.frame);
            const auto point = point_for(ff.interface, record.ifindex);
            if (!point) return false;
            record.point_id = *point;
            m_writer.add(record, ff.frame.bytes);
            ++m_result.frames;
            if (progress && (m_result.frames & 0x3FFF) == 0) progress(m_result.frames);
        }
    }

    // Half a file would look like a file read to its end: its points go, with what they got.
    void discard() {
        m_writer.flush();
        std::vector<std::int64_t> ids;
        ids.reserve(m_point_of.size());
        for (const auto& entry : m_point_of) ids.push_back(entry.second);
        Transaction txn(m_db);
        delete_points(m_db, ids);
        txn.commit();
        m_result.points.clear();
        m_result.frames = 0;
        *m_result.error += " (nothing of this file was kept)";
    }

    // The point name of a pcap/pcapng interface with the interfaces known so far: NAME alone for a file of one
    // interface, NAME/IFNAME (NAME/IFNAME#k when several share a name, as in merged captures where every
    // container has an eth0) for several.
    [[nodiscard]] std::string interface_name(std::uint32_t interface) const {
        std::string name = m_spec.name;
        const auto& interfaces = m_file.interfaces();
        if (interfaces.size() <= 1) return name;
        const FileInterface& iface = interfaces.at(interface);
        bool repeated = false;
        for (std::size_t k = 0; k < interfaces.size(); ++k)
            repeated = repeated || (k != interface && interfaces[k].name == iface.name);
        std::string label = iface.name.empty() ? "if" + std::to_string(interface) : iface.name;
        if (repeated && !iface.name.empty()) label.append("#").append(std::to_string(interface));
        return name.append("/").append(label);
    }

    // The point of (interface, ifindex), made when first seen. nullopt (and result.error) when its name is taken.
    std::optional<std::uint32_t> point_for(std::uint32_t interface, std::uint32_t ifindex) {
        const auto key = std::pair{interface, ifindex};
        if (auto it = m_point_of.find(key); it != m_point_of.end()) return it->second;
        const FileInterface& iface = m_file.interfaces().at(interface);
        Point p;
        p.name = m_spec.name;
        p.ifname = iface.name;
        if (iface.link_type == LinkType::linux_sll2) {
            const auto named = m_spec.link_names.find(ifindex);
            p.ifname = named != m_spec.link_names.end() ? named->second : "";
            p.name.append("/").append(p.ifname.empty() ? "if" + std::to_string(ifindex) : p.ifname);
            p.ifindex = ifindex;
        } else {
            p.name = interface_name(interface);
        }
        p.link_type = static_cast<std::uint32_t>(iface.link_type);
        p.source = m_spec.path;
        p.complete = false;  // until the file is read to its end
        std::tie(p.file_born_ns, p.file_written_ns) = file_times(m_spec.path);
        if (const auto existing = m_db.find_point(p.name)) {
            m_result.error =
                m_spec.path + ": a point named '" + p.name + "' is already in " + m_db.path() +
                (existing->complete
                     ? "; name this file's point with NAME=" + m_spec.path + ", or replace it with --replace"
                     : ", cut short by an import that was interrupted after " + std::to_string(existing->packets) +
                           " packets; import the file again with --replace");
            return std::nullopt;
        }
        const auto id = static_cast<std::uint32_t>(m_db.add_point(p));
        m_result.points.push_back(p.name);
        m_point_of.emplace(key, id);
        m_listed_at[id] = m_result.points.size() - 1;
        return id;
    }

    // A pcapng section that described more interfaces after the first packets changes how the earlier points
    // are named: give them the names they would have had had every interface been known from the start.
    void rename_late_points() {
        for (const auto& [key, id] : m_point_of) {
            if (m_file.interfaces().at(key.first).link_type == LinkType::linux_sll2) continue;
            const std::string want = interface_name(key.first);
            std::string& have = m_result.points[m_listed_at.at(id)];
            if (have == want || m_db.find_point(want)) continue;
            auto rename = m_db.prepare("UPDATE points SET name = ? WHERE id = ?");
            rename.bind(1, want).bind(2, std::int64_t{id});
            rename.run();
            have = want;
        }
    }

    // Every row of the file is committed: only now are its points complete (a kill before this leaves them not).
    void mark_complete() {
        m_writer.flush();
        auto mark = m_db.prepare("UPDATE points SET complete = 1 WHERE id = ?");
        for (const auto& [key, id] : m_point_of) {
            mark.bind(1, std::int64_t{id});
            mark.run();
            mark.reset();
        }
    }

    // The drops a pcapng writer recorded per interface are the point's kernel drops: the evidence that says
    // whether a packet missing there was lost by the network or by the capture. An interface split into
    // several points (tcpdump -i any, by ifindex) keeps its count to itself: it cannot be divided.
    void set_kernel_drops() {
        std::map<std::uint32_t, std::vector<std::uint32_t>> points_of_interface;
        for (const auto& [key, id] : m_point_of) points_of_interface[key.first].push_back(id);
        auto set_drops = m_db.prepare("UPDATE points SET kernel_drops = ? WHERE id = ?");
        for (const auto& [interface, ids] : points_of_interface) {
            const auto& drops = m_file.interfaces().at(interface).kernel_drops;
            if (!drops || ids.size() != 1) continue;
            set_drops.bind(1, static_cast<std::int64_t>(*drops)).bind(2, std::int64_t{ids.front()});
            set_drops.run();
            set_drops.reset();
        }
    }

    Database& m_db;
    Writer& m_writer;
    const ImportSpec& m_spec;
    CaptureFile& m_file;
    ImportResult m_result;
    std::map<std::pair<std::uint32_t, std::uint32_t>, std::uint32_t> m_point_of;  // (interface, ifindex) -> id
    std::map<std::uint32_t, std::size_t> m_listed_at;                             // point id -> index in points
};

}  // namespace

ImportResult import_file(Database& db, Writer& writer, const ImportSpec& spec,
                         const std::function<void(std::uint64_t)>& progress) {
    auto opened = CaptureFile::open(spec.path);
    if (!opened) {
        ImportResult result;
        result.error = opened.error();
        return result;
    }
    return FileImport(db, writer, spec, **opened).run(progress);
}

std::string import_name(const Point& p) {
    // The CLI's NAME never holds a '/' (in NAME=FILE a '=' after a '/' belongs to the path), so a '/' in a point's
    // name is the one the interface suffix added; the suffix is checked against the point's interface anyway.
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
