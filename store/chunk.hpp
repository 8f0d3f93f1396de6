#pragma once
// The spool's format: a live capture appends each point's frames, as captured, to a chunk in memory; a full
// chunk is appended to the spool file beside the database (FILE-spool, docs/schema.md) and, once the capture
// has stopped, its frames become `packets` rows (store/spool.hpp). Nothing is dissected while capturing.
//
// A chunk's `data` is its frames back to back, each a 17-byte header followed by the captured bytes, all
// integers little-endian, no padding:
//
//   offset  size  field
//        0     8  ts_ns      signed, ns since the epoch (as Frame::ts_ns)
//        8     4  cap_len    bytes captured = bytes that follow the header
//       12     4  wire_len   length on the wire
//       16     1  direction  0 unknown, 1 in, 2 out (hoptrace::Direction)
//       17     …  the frame, cap_len bytes, from its link-layer header (link type: the chunk's link_type)
//
// In the spool file each chunk is framed: a 44-byte header, the records (data_len bytes), an 8-byte trailer;
// chunks back to back from byte 0, no file header, all integers little-endian:
//
//   header  offset  size  field
//                0     4  magic "HTSC"
//                4     4  point_id     points.id
//                8     4  link_type    pcap LINKTYPE_* of every frame in it
//               12     4  frames
//               16     8  first_ts_ns  the earliest timestamp in it
//               24     8  last_ts_ns   the latest
//               32     8  data_len     bytes of records that follow
//               40     4  check        FNV-1a (32 bit) of header bytes 0-39
//   trailer          0     4  magic "HTSE"
//                    4     4  check        the header's check again
//
// A chunk is written with one writev() of all three parts. A process killed in the middle of it leaves a file
// that ends inside the chunk: a torn tail, recognised because the file ends before the trailer (or the trailer
// is not the header's). The records are not checksummed (that would cost CPU per byte while capturing): a chunk
// whose frame and byte counts disagree with its records is reported as damaged.

#include "tracer/packet.hpp"

#include <tl/expected.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace hoptrace::store {

inline constexpr std::size_t k_chunk_record_header = 17;
inline constexpr std::size_t k_chunk_header = 44;
inline constexpr std::size_t k_chunk_trailer = 8;

// One chunk of one point's frames, as stored in a capture_chunks row.
struct SpoolChunk {
    std::uint32_t point_id = 0;
    LinkType link_type = LinkType::ethernet;  // of every frame in it
    std::int64_t first_ts_ns = 0;             // the earliest timestamp in it
    std::int64_t last_ts_ns = 0;              // the latest
    std::uint32_t frames = 0;
    std::vector<std::uint8_t> data;  // the records, format above
};

// A chunk's frame in the spool file, without the records.
struct ChunkHeader {
    std::uint32_t point_id = 0;
    LinkType link_type = LinkType::ethernet;
    std::uint32_t frames = 0;
    std::int64_t first_ts_ns = 0;
    std::int64_t last_ts_ns = 0;
    std::uint64_t data_len = 0;
    std::uint32_t check = 0;
};

// The header and trailer that frame `chunk` in the spool file.
void encode_chunk_frame(const SpoolChunk& chunk, std::span<std::uint8_t, k_chunk_header> header,
                        std::span<std::uint8_t, k_chunk_trailer> trailer) noexcept;
// The header at the start of `bytes`; an error saying what is wrong when it is not one (wrong magic or check).
tl::expected<ChunkHeader, std::string> decode_chunk_header(std::span<const std::uint8_t, k_chunk_header> bytes);
// Whether `bytes` is the trailer that closes the chunk with this header.
bool is_chunk_trailer(const ChunkHeader& header, std::span<const std::uint8_t, k_chunk_trailer> bytes) noexcept;

// Appends frames to a chunk in the record format. Not thread-safe: one builder per capture thread.
class ChunkBuilder {
public:
    // `reserve`: bytes of record data to allocate for each new chunk (a chunk may grow past it).
    explicit ChunkBuilder(std::uint32_t point_id, std::size_t reserve = 0);

    // Copies the frame. All frames of a chunk share the first one's link type: take() before a different one.
    void append(const Frame& frame);

    [[nodiscard]] bool empty() const noexcept { return m_chunk.frames == 0; }
    [[nodiscard]] std::uint32_t frames() const noexcept { return m_chunk.frames; }
    [[nodiscard]] std::size_t bytes() const noexcept { return m_chunk.data.size(); }
    [[nodiscard]] LinkType link_type() const noexcept { return m_chunk.link_type; }

    // The chunk so far; the builder starts an empty one, with no buffer until give_buffer() or the next append().
    SpoolChunk take();
    // A buffer for the empty chunk's records (cleared; its capacity is what counts): one a stored chunk had, so
    // that a capture does not allocate, and fault in, a fresh megabyte per chunk.
    void give_buffer(std::vector<std::uint8_t> buffer);

private:
    std::size_t m_reserve;
    SpoolChunk m_chunk;
};

// Reads the frames of a chunk's data back. The frames' bytes are views into `data`.
class ChunkReader {
public:
    ChunkReader(std::span<const std::uint8_t> data, LinkType link_type) noexcept
        : m_data(data), m_link_type(link_type) {}

    // true: `frame` holds the next frame; false: the data ended cleanly after a whole record. The error says
    // at which byte a record runs past the end of the data.
    tl::expected<bool, std::string> next(Frame& frame);

    [[nodiscard]] std::uint32_t frames_read() const noexcept { return m_frames; }

private:
    std::span<const std::uint8_t> m_data;
    LinkType m_link_type;
    std::size_t m_offset = 0;
    std::uint32_t m_frames = 0;
};

}  // namespace hoptrace::store
