#pragma once
// The spool's record format: a live capture appends each point's frames, as captured, to a chunk in memory;
// a full chunk becomes one row of `capture_chunks` (docs/schema.md) and, once the capture has stopped, its
// frames become `packets` rows (store/spool.hpp). Nothing is dissected while capturing.
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

#include "tracer/packet.hpp"

#include <tl/expected.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace hoptrace::store {

inline constexpr std::size_t k_chunk_record_header = 17;

// One chunk of one point's frames, as stored in a capture_chunks row.
struct SpoolChunk {
    std::uint32_t point_id = 0;
    LinkType link_type = LinkType::ethernet;  // of every frame in it
    std::int64_t first_ts_ns = 0;             // the earliest timestamp in it
    std::int64_t last_ts_ns = 0;              // the latest
    std::uint32_t frames = 0;
    std::vector<std::uint8_t> data;  // the records, format above
};

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
