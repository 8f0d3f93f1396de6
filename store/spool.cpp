#include "store/spool.hpp"

#include "store/private_file.hpp"
#include "tracer/dissect.hpp"
#include "tracer/errno_text.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <utility>

namespace hoptrace::store {

namespace {

// Buffers of written chunks kept for reuse: about one per capture point is what a capture needs.
constexpr std::size_t k_max_spare_buffers = 8;

bool is_disk_full(int error) { return error == ENOSPC || error == EDQUOT; }

// An eighth of the file system, at most 8 MiB: room for the database's small writes (meta, conntrack, WAL).
std::uint64_t headroom_for(int fd) {
    struct statvfs fs {};
    if (::fstatvfs(fd, &fs) != 0) return 0;
    const std::uint64_t size = std::uint64_t{fs.f_blocks} * fs.f_frsize;
    return std::min(size / 8, std::uint64_t{8} << 20);
}

// Bytes an unprivileged writer may still use on the file system (what df shows as available).
std::optional<std::uint64_t> available_bytes(int fd) {
    struct statvfs fs {};
    if (::fstatvfs(fd, &fs) != 0) return std::nullopt;
    return std::uint64_t{fs.f_bavail} * fs.f_frsize;
}

// The spool file a database names, in the database's own directory (so a database moved together with its spool
// still finds it); nullopt when it names none.
std::optional<std::string> named_spool(const Database& db) {
    const auto name = db.meta(k_meta_spool_file);
    if (!name) {
        return std::nullopt;
    }
    return (std::filesystem::path(db.path()).parent_path() / *name).string();
}

std::uint64_t stored_bytes(const Database& db) {
    const std::string text = db.meta(k_meta_spool_stored).value_or("0");
    std::uint64_t value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc{} || end != text.data() + text.size()) {
        throw Error(db.path() + ": meta '" + k_meta_spool_stored + "' is '" + text + "', not a byte count");
    }
    return value;
}

std::uint64_t legacy_frames(const Database& db) {
    Statement has = db.prepare("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'capture_chunks'");
    if (!has.step() || has.column_int(0) == 0) {
        return 0;
    }
    Statement sum = db.prepare("SELECT coalesce(sum(frames), 0) FROM capture_chunks");
    return sum.step() ? static_cast<std::uint64_t>(sum.column_int(0)) : 0;
}

// Reads exactly bytes.size() bytes at `offset`, or fewer only at the end of the file.
std::size_t read_at(int fd, const std::string& path, std::span<std::uint8_t> bytes, std::uint64_t offset) {
    std::size_t done = 0;
    while (done < bytes.size()) {
        const ssize_t n = ::pread(fd, bytes.data() + done, bytes.size() - done, static_cast<off_t>(offset + done));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            throw Error(path + ": cannot read the capture spool: " + errno_text(errno));
        }
        if (n == 0) {
            break;
        }
        done += static_cast<std::size_t>(n);
    }
    return done;
}

// The spool file opened for reading, locked (exclusively: one ingest at a time, never while a capture writes it).
struct OpenedSpool {
    UniqueFd fd;
    std::uint64_t size = 0;
    bool writable = false;  // opened for writing too: stored chunks can be freed (punched out)
};

OpenedSpool open_spool(const std::string& path, bool lock) {
    OpenedSpool out;
    if (lock) {
        out.fd = UniqueFd(::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
        out.writable = static_cast<bool>(out.fd);
    }
    if (!out.fd) {
        out.fd = UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    }
    if (!out.fd) {
        throw Error(path + ": cannot open the capture spool the database names: " + errno_text(errno) +
                    (errno == ENOENT ? " (its packets are lost; to use the database without them: DELETE FROM meta "
                                       "WHERE key LIKE 'spool_%')"
                                     : ""));
    }
    if (lock && ::flock(out.fd.get(), LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) {
            throw Error(path +
                        ": a running capture is writing this spool (or another hoptrace is storing it); "
                        "wait until it has finished");
        }
        throw Error(path + ": cannot lock the capture spool: " + errno_text(errno));
    }
    struct stat st {};
    if (::fstat(out.fd.get(), &st) != 0) {
        throw Error(path + ": cannot stat the capture spool: " + errno_text(errno));
    }
    out.size = static_cast<std::uint64_t>(st.st_size);
    return out;
}

// One chunk of the file, or why there is none at `offset`.
struct FileChunk {
    enum class Kind : std::uint8_t { chunk, end, torn, damaged } kind = Kind::end;
    ChunkHeader header;
    std::uint64_t next = 0;  // offset after the chunk's trailer
    std::string what;        // torn / damaged: what is wrong
};

// Reads the header at `offset` (and, with `data`, the records and the trailer into it) and classifies it.
FileChunk read_chunk(const OpenedSpool& file, const std::string& path, std::uint64_t offset,
                     std::vector<std::uint8_t>* data) {
    FileChunk out;
    if (offset >= file.size) {
        return out;  // Kind::end
    }
    std::array<std::uint8_t, k_chunk_header> header{};
    const std::size_t got = read_at(file.fd.get(), path, header, offset);
    if (got < header.size()) {
        out.kind = FileChunk::Kind::torn;
        out.what = "ends inside a chunk header (its last " + std::to_string(got) +
                   " bytes): that chunk's frames are lost (how many, and of which point, was in the missing part)";
        return out;
    }
    auto decoded = decode_chunk_header(header);
    if (!decoded) {
        out.kind = FileChunk::Kind::damaged;
        out.what = decoded.error();
        return out;
    }
    out.header = *decoded;
    const std::uint64_t left = file.size - offset - k_chunk_header;
    if (out.header.data_len > left || left - out.header.data_len < k_chunk_trailer) {
        out.kind = FileChunk::Kind::torn;
        return out;
    }
    out.next = offset + k_chunk_header + out.header.data_len + k_chunk_trailer;
    if (data == nullptr) {
        std::array<std::uint8_t, k_chunk_trailer> trailer{};
        read_at(file.fd.get(), path, trailer, out.next - k_chunk_trailer);
        if (!is_chunk_trailer(out.header, trailer)) {
            out.kind = out.next == file.size ? FileChunk::Kind::torn : FileChunk::Kind::damaged;
            out.what = "its trailer is not the header's";
            return out;
        }
        out.kind = FileChunk::Kind::chunk;
        return out;
    }
    data->resize(out.header.data_len + k_chunk_trailer);
    if (read_at(file.fd.get(), path, *data, offset + k_chunk_header) != data->size()) {
        out.kind = FileChunk::Kind::torn;  // the file shrank meanwhile
        return out;
    }
    const std::span<const std::uint8_t, k_chunk_trailer> trailer(data->data() + out.header.data_len, k_chunk_trailer);
    if (!is_chunk_trailer(out.header, trailer)) {
        out.kind = out.next == file.size ? FileChunk::Kind::torn : FileChunk::Kind::damaged;
        out.what = "its trailer is not the header's";
        return out;
    }
    data->resize(out.header.data_len);
    out.kind = FileChunk::Kind::chunk;
    return out;
}

std::string point_name(const Database& db, std::uint32_t point_id) {
    Statement stmt = db.prepare("SELECT name FROM points WHERE id = ?1");
    stmt.bind(1, static_cast<std::int64_t>(point_id));
    return stmt.step() ? "'" + stmt.column_text(0) + "'" : "id " + std::to_string(point_id);
}

[[noreturn]] void damaged(const std::string& path, std::uint64_t offset, const FileChunk& chunk,
                          const std::string& what, std::uint64_t file_size) {
    const bool known = chunk.next != 0;
    throw Error(path + ": the chunk at byte " + std::to_string(offset) +
                (known ? " (point id " + std::to_string(chunk.header.point_id) + ")" : "") + " is damaged: " + what +
                "; it stays spooled (to go on without " +
                (known ? "its " + std::to_string(chunk.header.frames) + " frames: UPDATE meta SET value = '" +
                             std::to_string(chunk.next) + "'"
                       : "the rest of the file: UPDATE meta SET value = '" + std::to_string(file_size) + "'") +
                " WHERE key = '" + k_meta_spool_stored + "')");
}

void write_all(int fd, const std::string& path, std::span<iovec> parts) {
    while (!parts.empty()) {
        const ssize_t n = ::writev(fd, parts.data(), static_cast<int>(parts.size()));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            const int error = errno;
            throw Error(path + ": cannot write the capture spool: " + errno_text(error), is_disk_full(error));
        }
        auto written = static_cast<std::size_t>(n);
        while (!parts.empty() && written >= parts.front().iov_len) {
            written -= parts.front().iov_len;
            parts = parts.subspan(1);
        }
        if (!parts.empty()) {
            parts.front().iov_base = static_cast<std::uint8_t*>(parts.front().iov_base) + written;
            parts.front().iov_len -= written;
        }
    }
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// SpoolFile

SpoolFile::SpoolFile(Database& db)
    : m_path(db.path() + "-spool"),
      m_queue(k_max_pending_chunks, {.process = [this](SpoolChunk& chunk) { write_whole_chunk(chunk); },
                                     .done = [this](SpoolChunk& chunk) { chunk_written(chunk); },
                                     .lost = [this](SpoolChunk& chunk) { note_lost(chunk); }}) {
    if (db.meta(k_meta_spool_file)) {
        throw Error(db.path() + ": already has a pending capture spool; store it first ('hoptrace correlate')");
    }
    // Created O_EXCL|O_NOFOLLOW, mode 0600: a symbolic link planted under this name must not make a capture (as
    // root) truncate the file it points to. No O_TRUNC before the lock: a file of that name left behind may be one
    // another process is storing right now.
    auto fd = open_private_for_writing(m_path);
    if (!fd) {
        throw Error(fd.error() + " (the capture spool)");
    }
    m_fd = std::move(*fd);
    if (::flock(m_fd.get(), LOCK_EX | LOCK_NB) != 0) {
        throw Error(m_path + ": another hoptrace is using this spool file: " + errno_text(errno));
    }
    if (::ftruncate(m_fd.get(), 0) != 0) {
        throw Error(m_path + ": cannot truncate the capture spool: " + errno_text(errno));
    }
    m_headroom = headroom_for(m_fd.get());
    Transaction txn(db);
    db.set_meta(k_meta_spool_file, std::filesystem::path(m_path).filename().string());
    db.set_meta(k_meta_spool_stored, "0");
    txn.commit();
}

SpoolFile::~SpoolFile() {
    try {
        close();
    } catch (...) {  // NOLINT(bugprone-empty-catch): documented: call close() to see the error
    }
}

std::vector<std::uint8_t> SpoolFile::append(SpoolChunk chunk) {
    Lock lock = m_queue.lock();
    try {
        m_queue.wait_for_room(lock);
    } catch (...) {
        note_lost(chunk);
        throw;
    }
    if (m_closed) {
        throw Error(m_path + ": chunk added to a closed spool");
    }
    m_queue.push(lock, std::move(chunk));
    std::vector<std::uint8_t> spare;
    if (!m_spare_buffers.empty()) {
        spare = std::move(m_spare_buffers.back());
        m_spare_buffers.pop_back();
    }
    return spare;
}

void SpoolFile::close() {
    {
        const Lock lock = m_queue.lock();
        m_closed = true;
    }
    try {
        m_queue.close();
    } catch (...) {
        m_fd.reset();  // unlocks
        throw;
    }
    m_fd.reset();
}

std::uint64_t SpoolFile::bytes_written() const noexcept {
    const Lock lock = m_queue.lock();
    return m_bytes;
}

void SpoolFile::note_lost(const SpoolChunk& chunk) {
    if (chunk.frames == 0) return;
    m_lost_from = m_lost_from ? std::min(*m_lost_from, chunk.first_ts_ns) : chunk.first_ts_ns;
}

std::optional<std::int64_t> SpoolFile::lost_from() const noexcept {
    const Lock lock = m_queue.lock();
    return m_lost_from;
}

std::uint64_t SpoolFile::reserve_bytes() const noexcept {
    const Lock lock = m_queue.lock();
    return m_headroom + m_frames * k_reserve_per_frame + m_bytes / k_reserve_fraction;
}

bool SpoolFile::disk_full() const noexcept {
    const Lock lock = m_queue.lock();
    return m_disk_full;
}

std::size_t SpoolFile::peak_pending_chunks() const noexcept {
    const Lock lock = m_queue.lock();
    return m_queue.peak(lock);
}

void SpoolFile::write_whole_chunk(const SpoolChunk& chunk) {
    try {
        write_chunk(chunk);
    } catch (const Error& e) {
        if (e.disk_full()) {
            const Lock lock = m_queue.lock();
            // A chunk either is in the file whole or not at all: cut a partly written one off again.
            static_cast<void>(::ftruncate(m_fd.get(), static_cast<off_t>(m_bytes)));
            m_disk_full = true;
        }
        throw;  // the queue stops, and note_lost() sees this chunk and every one behind it
    }
}

void SpoolFile::chunk_written(SpoolChunk& chunk) {
    m_bytes += k_chunk_header + chunk.data.size() + k_chunk_trailer;
    m_frames += chunk.frames;
    if (m_spare_buffers.size() < k_max_spare_buffers) {
        chunk.data.clear();  // keeps the capacity
        m_spare_buffers.push_back(std::move(chunk.data));
    }
}

void SpoolFile::write_chunk(const SpoolChunk& chunk) {
    std::array<std::uint8_t, k_chunk_header> header{};
    std::array<std::uint8_t, k_chunk_trailer> trailer{};
    encode_chunk_frame(chunk, header, trailer);
    const std::uint64_t size = k_chunk_header + chunk.data.size() + k_chunk_trailer;
    // What the rows of everything spooled so far, this chunk included, will need beyond the spool's bytes.
    const std::uint64_t reserve = reserve_bytes() + chunk.frames * k_reserve_per_frame + size / k_reserve_fraction;
    if (const auto available = available_bytes(m_fd.get()); available && *available < size + reserve) {
        throw Error(m_path + ": the disk is full (" + std::to_string(*available >> 20) + " MiB left, " +
                        std::to_string(reserve >> 20) +
                        " MiB kept for storing and correlating the capture): "
                        "capturing stopped",
                    true);
    }
    std::array<iovec, 3> parts{{
        {header.data(), header.size()},
        {const_cast<std::uint8_t*>(chunk.data.data()), chunk.data.size()},  // NOLINT: writev does not write it
        {trailer.data(), trailer.size()},
    }};
    write_all(m_fd.get(), m_path, parts);
}

// ---------------------------------------------------------------------------------------------------------------
// Spool

Spool::Spool(SpoolFile& file, std::span<const std::uint32_t> point_ids, SpoolLimits limits)
    : m_file(file), m_limits(limits) {
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
        // May block while the file's queue is full. The buffer that comes back is a written chunk's.
        buffer.builder.give_buffer(m_file.append(buffer.builder.take()));
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

// ---------------------------------------------------------------------------------------------------------------
// After the capture

SpoolSize spool_size(const Database& db) {
    SpoolSize size;
    size.legacy_frames = legacy_frames(db);
    const auto path = named_spool(db);
    if (!path) {
        return size;
    }
    size.pending = true;
    size.path = *path;
    const OpenedSpool file = open_spool(*path, false);
    for (std::uint64_t offset = stored_bytes(db);;) {
        const FileChunk chunk = read_chunk(file, *path, offset, nullptr);
        if (chunk.kind != FileChunk::Kind::chunk) {
            break;
        }
        ++size.chunks;
        size.frames += chunk.header.frames;
        offset = chunk.next;
    }
    return size;
}

SpoolIngest ingest_spool(Database& db, Writer& writer, const std::function<bool(std::uint64_t)>& progress) {
    if (const std::uint64_t legacy = legacy_frames(db); legacy != 0) {
        throw Error(db.path() + ": " + std::to_string(legacy) +
                    " captured packets wait in the capture_chunks table of a development build of hoptrace "
                    "(7824020), which this build does not read; store them with that build ('hoptrace correlate'), "
                    "or give them up: DROP TABLE capture_chunks");
    }
    SpoolIngest result;
    const auto path = named_spool(db);
    if (!path) {
        return result;
    }
    const OpenedSpool file = open_spool(*path, true);
    std::uint64_t offset = stored_bytes(db);
    std::uint64_t punched = offset;  // the bytes before it are stored (and freed where the file system can)
    std::vector<std::uint8_t> data;
    for (;;) {
        const FileChunk chunk = read_chunk(file, *path, offset, &data);
        if (chunk.kind == FileChunk::Kind::end) {
            break;
        }
        if (chunk.kind == FileChunk::Kind::torn) {
            result.torn = *path + " " +
                          (chunk.what.empty() || chunk.next != 0
                               ? "ends inside its last chunk (at byte " + std::to_string(offset) + " of " +
                                     std::to_string(file.size) + ": the capture was killed while writing it): " +
                                     std::to_string(chunk.header.frames) + " frames of point " +
                                     point_name(db, chunk.header.point_id) + " are lost"
                               : chunk.what);
            break;
        }
        if (chunk.kind == FileChunk::Kind::damaged) {
            damaged(*path, offset, chunk, chunk.what, file.size);
        }
        Writer::PacketRows rows;
        rows.records.reserve(chunk.header.frames);
        rows.offsets.reserve(std::size_t{chunk.header.frames} + 1);
        rows.bytes.reserve(data.size());
        ChunkReader reader(data, chunk.header.link_type);
        Frame frame;
        for (;;) {
            const auto more = reader.next(frame);
            if (!more) {
                damaged(*path, offset, chunk, more.error(), file.size);
            }
            if (!*more) {
                break;
            }
            PacketRecord record = dissect(frame);
            record.point_id = chunk.header.point_id;
            rows.add(record, frame.bytes);
        }
        if (reader.frames_read() != chunk.header.frames) {
            damaged(*path, offset, chunk,
                    "it holds " + std::to_string(reader.frames_read()) + " frames, its header says " +
                        std::to_string(chunk.header.frames),
                    file.size);
        }
        writer.add_rows(std::move(rows), offset, chunk.next);
        offset = chunk.next;
        // Every k_punch_bytes, or every chunk once the disk is nearly full (a capture that filled it).
        const bool tight =
            file.writable &&
            available_bytes(file.fd.get()).value_or(std::numeric_limits<std::uint64_t>::max()) < 2 * k_punch_bytes;
        if (file.writable && (offset - punched >= k_punch_bytes || tight)) {
            // The rows are committed and, after the checkpoint, in the database file: their spool bytes are never
            // read again. Freeing them keeps a capture that filled the disk storable.
            writer.flush();
            db.exec("PRAGMA wal_checkpoint(PASSIVE)");
            static_cast<void>(::fallocate(file.fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                          static_cast<off_t>(punched), static_cast<off_t>(offset - punched)));
            punched = offset;
        }
        ++result.chunks;
        result.frames += chunk.header.frames;
        if (progress && !progress(result.frames)) {
            result.stopped = true;
            break;
        }
    }
    writer.flush();
    if (result.stopped) {
        return result;
    }
    // Every chunk is a row now. The rows reach the disk before the file goes (synchronous=NORMAL syncs the WAL only
    // at checkpoints), then the database stops naming the spool, then the file is removed: a crash in between
    // leaves at worst a file nobody names, which the next capture of that name truncates.
    db.exec("PRAGMA wal_checkpoint(PASSIVE)");
    {
        Transaction txn(db);
        db.exec(std::string("DELETE FROM meta WHERE key IN ('") + k_meta_spool_file + "', '" + k_meta_spool_stored +
                "')");
        if (!result.torn.empty()) {
            db.set_meta("spool_lost", result.torn);
        }
        apply_spool_cut(db);  // with the spool's keys: a kill leaves both pending or neither
        txn.commit();
    }
    if (::unlink(path->c_str()) != 0 && errno != ENOENT) {
        throw Error(*path + ": stored, but cannot remove the capture spool: " + errno_text(errno));
    }
    return result;
}

bool apply_spool_cut(Database& db) {
    const auto cut = db.meta(k_meta_spool_cut);
    if (!cut) return false;
    std::int64_t ts_ns = 0;
    if (std::from_chars(cut->data(), cut->data() + cut->size(), ts_ns).ec != std::errc())
        throw Error(db.path() + ": meta " + k_meta_spool_cut + " is not a timestamp ('" + *cut + "')");
    constexpr const char* live = "(SELECT id FROM points WHERE source = 'live')";
    auto late = db.prepare(std::string("DELETE FROM packets WHERE ts_ns > ?1 AND point_id IN ") + live);
    late.bind(1, ts_ns);
    late.run();
    db.remove_meta(k_meta_spool_cut);
    db.exec(std::string("UPDATE points SET packets = (SELECT count(*) FROM packets WHERE point_id = points.id) "
                        "WHERE id IN ") +
            live);
    return true;
}

}  // namespace hoptrace::store
