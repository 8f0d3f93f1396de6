#include "store/spool.hpp"

#include "tracer/dissect.hpp"

#include <algorithm>
#include <optional>
#include <string>
#include <utility>

namespace hoptrace::store {

namespace {

// Holds the connection's (recursive) mutex: the writer thread shares the connection, and a statement of ours
// left in progress while it commits could make its COMMIT fail.
class ConnectionHold {
public:
    explicit ConnectionHold(const Database& db) noexcept : m_mutex(sqlite3_db_mutex(db.handle())) {
        sqlite3_mutex_enter(m_mutex);
    }
    ConnectionHold(const ConnectionHold&) = delete;
    ConnectionHold& operator=(const ConnectionHold&) = delete;
    ~ConnectionHold() { sqlite3_mutex_leave(m_mutex); }

private:
    sqlite3_mutex* m_mutex;
};

struct StoredChunk {
    std::int64_t id = 0;
    SpoolChunk chunk;
};

// The oldest chunk after `after`, copied out of the statement (which is reset before the lock is released).
std::optional<StoredChunk> read_chunk_after(const Database& db, Statement& stmt, std::int64_t after) {
    const ConnectionHold hold(db);
    stmt.bind(1, after);
    std::optional<StoredChunk> out;
    if (stmt.step()) {
        out.emplace();
        out->id = stmt.column_int(0);
        out->chunk.point_id = static_cast<std::uint32_t>(stmt.column_int(1));
        out->chunk.link_type = static_cast<LinkType>(stmt.column_int(2));
        out->chunk.first_ts_ns = stmt.column_int(3);
        out->chunk.last_ts_ns = stmt.column_int(4);
        out->chunk.frames = static_cast<std::uint32_t>(stmt.column_int(5));
        const auto data = stmt.column_blob(6);
        out->chunk.data.assign(data.begin(), data.end());
    }
    stmt.reset();
    return out;
}

[[noreturn]] void damaged(const Database& db, const StoredChunk& stored, const std::string& what) {
    throw Error(db.path() + ": spooled chunk " + std::to_string(stored.id) + " (point id " +
                std::to_string(stored.chunk.point_id) + ") is damaged: " + what +
                "; it stays in capture_chunks (to go on without its " + std::to_string(stored.chunk.frames) +
                " frames: DELETE FROM capture_chunks WHERE id = " + std::to_string(stored.id) + ")");
}

}  // namespace

Spool::Spool(Writer& writer, std::span<const std::uint32_t> point_ids, SpoolLimits limits)
    : m_writer(writer), m_limits(limits) {
    // Room for a full chunk and the frame that fills it, mostly: a chunk does not reallocate on the hot path.
    const std::size_t reserve = std::min(m_limits.chunk_bytes, std::size_t{64} << 20) + (std::size_t{64} << 10);
    for (const std::uint32_t id : point_ids) {
        m_points.push_back(std::make_unique<PointBuffer>(id, reserve));
    }
}

Spool::PointBuffer& Spool::buffer(std::uint32_t point_id) {
    // A handful of points: a linear search beats hashing. The vector never changes after construction, so
    // reading it from every capture thread at once is safe.
    const auto it =
        std::find_if(m_points.begin(), m_points.end(), [point_id](const auto& p) { return p->point_id == point_id; });
    if (it == m_points.end()) {
        throw Error("spool: frame for point id " + std::to_string(point_id) + ", which has no buffer");
    }
    return **it;
}

void Spool::hand_over(PointBuffer& buffer) {
    if (!buffer.builder.empty()) {
        // May block while the writer's queue is full. The buffer that comes back is a stored chunk's.
        buffer.builder.give_buffer(m_writer.add_chunk(buffer.builder.take()));
    }
}

void Spool::append(std::uint32_t point_id, const Frame& frame) {
    PointBuffer& b = buffer(point_id);
    if (!b.builder.empty() && b.builder.link_type() != frame.link_type) {
        hand_over(b);  // a chunk has one link type
    }
    if (b.builder.empty()) {
        b.started = std::chrono::steady_clock::now();
    }
    b.builder.append(frame);
    if (b.builder.bytes() >= m_limits.chunk_bytes || b.builder.frames() >= m_limits.chunk_frames) {
        hand_over(b);
    }
}

void Spool::tick(std::uint32_t point_id) {
    PointBuffer& b = buffer(point_id);
    if (!b.builder.empty() && std::chrono::steady_clock::now() - b.started >= m_limits.chunk_age) {
        hand_over(b);
    }
}

void Spool::flush(std::uint32_t point_id) { hand_over(buffer(point_id)); }

namespace {

std::int64_t pragma_value(const Database& db, const char* name) {
    Statement stmt = db.prepare(std::string("PRAGMA ") + name);
    return stmt.step() ? stmt.column_int(0) : 0;
}

}  // namespace

SpoolSettings::SpoolSettings(Database& db)
    : m_db(db), m_wal_pages(pragma_value(db, "wal_autocheckpoint")), m_cache_size(pragma_value(db, "cache_size")) {
    m_db.exec("PRAGMA wal_autocheckpoint = " + std::to_string(k_wal_pages) + "; PRAGMA cache_size = -" +
              std::to_string(k_cache_kib));
}

SpoolSettings::~SpoolSettings() {
    try {
        restore();
    } catch (...) {  // NOLINT(bugprone-empty-catch): a destructor never throws; restore() reports it
    }
}

void SpoolSettings::restore() {
    if (m_restored) {
        return;
    }
    m_restored = true;
    m_db.exec("PRAGMA wal_autocheckpoint = " + std::to_string(m_wal_pages) +
              "; PRAGMA cache_size = " + std::to_string(m_cache_size));
}

SpoolSize spool_size(const Database& db) {
    Statement stmt = db.prepare("SELECT count(*), coalesce(sum(frames), 0) FROM capture_chunks");
    SpoolSize size;
    if (stmt.step()) {
        size.chunks = static_cast<std::uint64_t>(stmt.column_int(0));
        size.frames = static_cast<std::uint64_t>(stmt.column_int(1));
    }
    return size;
}

SpoolIngest ingest_spool(Database& db, Writer& writer, const std::function<bool(std::uint64_t)>& progress) {
    Statement next = db.prepare(
        "SELECT id, point_id, link_type, first_ts_ns, last_ts_ns, frames, data FROM capture_chunks WHERE id > ?1 "
        "ORDER BY id LIMIT 1");
    SpoolIngest result;
    std::int64_t last = 0;
    while (auto stored = read_chunk_after(db, next, last)) {
        last = stored->id;
        const SpoolChunk& chunk = stored->chunk;
        Writer::PacketRows rows;
        rows.records.reserve(chunk.frames);
        rows.offsets.reserve(std::size_t{chunk.frames} + 1);
        rows.bytes.reserve(chunk.data.size());
        ChunkReader reader(chunk.data, chunk.link_type);
        Frame frame;
        for (;;) {
            const auto more = reader.next(frame);
            if (!more) {
                damaged(db, *stored, more.error());
            }
            if (!*more) {
                break;
            }
            PacketRecord record = dissect(frame);
            record.point_id = chunk.point_id;
            rows.add(record, frame.bytes);
        }
        if (reader.frames_read() != chunk.frames) {
            damaged(db, *stored,
                    "it holds " + std::to_string(reader.frames_read()) + " frames, its row says " +
                        std::to_string(chunk.frames));
        }
        writer.add_rows(std::move(rows), stored->id);
        ++result.chunks;
        result.frames += chunk.frames;
        if (progress && !progress(result.frames)) {
            result.stopped = true;
            break;
        }
    }
    writer.flush();
    return result;
}

}  // namespace hoptrace::store
