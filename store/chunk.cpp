#include "store/chunk.hpp"

#include <algorithm>
#include <array>
#include <utility>

namespace hoptrace::store {

namespace {

// Little-endian whatever the host: byte by byte (compilers turn these into one load or store on x86 and ARM).
template <typename T>
void put_le(std::uint8_t* out, T value) noexcept {
    for (std::size_t i = 0; i < sizeof(T); ++i) {
        out[i] = static_cast<std::uint8_t>(static_cast<std::uint64_t>(value) >> (8 * i));
    }
}

template <typename T>
T get_le(const std::uint8_t* in) noexcept {
    std::uint64_t value = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i) {
        value |= static_cast<std::uint64_t>(in[i]) << (8 * i);
    }
    return static_cast<T>(value);
}

constexpr std::uint8_t k_max_direction = static_cast<std::uint8_t>(Direction::outbound);

constexpr std::uint32_t k_header_magic = 0x43535448;   // "HTSC" as bytes
constexpr std::uint32_t k_trailer_magic = 0x45535448;  // "HTSE"
constexpr std::size_t k_checked_bytes = 40;

std::uint32_t fnv1a(std::span<const std::uint8_t> bytes) noexcept {
    std::uint32_t hash = 2166136261U;
    for (const std::uint8_t b : bytes) {
        hash = (hash ^ b) * 16777619U;
    }
    return hash;
}

}  // namespace

void encode_chunk_frame(const SpoolChunk& chunk, std::span<std::uint8_t, k_chunk_header> header,
                        std::span<std::uint8_t, k_chunk_trailer> trailer) noexcept {
    std::uint8_t* h = header.data();
    put_le<std::uint32_t>(h, k_header_magic);
    put_le<std::uint32_t>(h + 4, chunk.point_id);
    put_le<std::uint32_t>(h + 8, static_cast<std::uint32_t>(chunk.link_type));
    put_le<std::uint32_t>(h + 12, chunk.frames);
    put_le<std::int64_t>(h + 16, chunk.first_ts_ns);
    put_le<std::int64_t>(h + 24, chunk.last_ts_ns);
    put_le<std::uint64_t>(h + 32, chunk.data.size());
    const std::uint32_t check = fnv1a(header.first(k_checked_bytes));
    put_le<std::uint32_t>(h + k_checked_bytes, check);
    put_le<std::uint32_t>(trailer.data(), k_trailer_magic);
    put_le<std::uint32_t>(trailer.data() + 4, check);
}

tl::expected<ChunkHeader, std::string> decode_chunk_header(std::span<const std::uint8_t, k_chunk_header> bytes) {
    const std::uint8_t* h = bytes.data();
    if (get_le<std::uint32_t>(h) != k_header_magic) {
        return tl::unexpected(std::string("not a chunk header (no HTSC magic)"));
    }
    ChunkHeader out;
    out.check = get_le<std::uint32_t>(h + k_checked_bytes);
    if (fnv1a(bytes.first(k_checked_bytes)) != out.check) {
        return tl::unexpected(std::string("the chunk header's check does not match its bytes"));
    }
    out.point_id = get_le<std::uint32_t>(h + 4);
    out.link_type = static_cast<LinkType>(get_le<std::uint32_t>(h + 8));
    out.frames = get_le<std::uint32_t>(h + 12);
    out.first_ts_ns = get_le<std::int64_t>(h + 16);
    out.last_ts_ns = get_le<std::int64_t>(h + 24);
    out.data_len = get_le<std::uint64_t>(h + 32);
    return out;
}

bool is_chunk_trailer(const ChunkHeader& header, std::span<const std::uint8_t, k_chunk_trailer> bytes) noexcept {
    return get_le<std::uint32_t>(bytes.data()) == k_trailer_magic &&
           get_le<std::uint32_t>(bytes.data() + 4) == header.check;
}

ChunkBuilder::ChunkBuilder(std::uint32_t point_id, std::size_t reserve) : m_reserve(reserve) {
    m_chunk.point_id = point_id;
}

void ChunkBuilder::give_buffer(std::vector<std::uint8_t> buffer) {
    if (m_chunk.frames == 0 && buffer.capacity() > m_chunk.data.capacity()) {
        buffer.clear();
        m_chunk.data = std::move(buffer);
    }
}

void ChunkBuilder::append(const Frame& frame) {
    if (m_chunk.data.capacity() == 0) {
        m_chunk.data.reserve(m_reserve);
    }
    std::array<std::uint8_t, k_chunk_record_header> header{};
    put_le<std::int64_t>(header.data(), frame.ts_ns);
    put_le<std::uint32_t>(header.data() + 8, static_cast<std::uint32_t>(frame.bytes.size()));
    put_le<std::uint32_t>(header.data() + 12, frame.wire_len);
    header[16] = static_cast<std::uint8_t>(frame.direction);
    // insert() from a range copies without first zeroing the new bytes (as resize() would).
    m_chunk.data.insert(m_chunk.data.end(), header.begin(), header.end());
    m_chunk.data.insert(m_chunk.data.end(), frame.bytes.begin(), frame.bytes.end());
    if (m_chunk.frames == 0) {
        m_chunk.link_type = frame.link_type;
        m_chunk.first_ts_ns = frame.ts_ns;
        m_chunk.last_ts_ns = frame.ts_ns;
    } else {
        // Frames of one packet socket come in the kernel's order, which is not strictly time order.
        m_chunk.first_ts_ns = std::min(m_chunk.first_ts_ns, frame.ts_ns);
        m_chunk.last_ts_ns = std::max(m_chunk.last_ts_ns, frame.ts_ns);
    }
    ++m_chunk.frames;
}

SpoolChunk ChunkBuilder::take() {
    SpoolChunk out = std::move(m_chunk);
    m_chunk = SpoolChunk{};
    m_chunk.point_id = out.point_id;
    return out;
}

tl::expected<bool, std::string> ChunkReader::next(Frame& frame) {
    const std::size_t left = m_data.size() - m_offset;
    if (left == 0) {
        return false;
    }
    if (left < k_chunk_record_header) {
        return tl::unexpected("record " + std::to_string(m_frames + 1) + " at byte " + std::to_string(m_offset) +
                              ": its header runs past the end of the chunk (" + std::to_string(m_data.size()) +
                              " bytes)");
    }
    const std::uint8_t* p = m_data.data() + m_offset;
    const auto cap_len = get_le<std::uint32_t>(p + 8);
    const std::uint8_t direction = p[16];
    if (cap_len > left - k_chunk_record_header) {
        return tl::unexpected("record " + std::to_string(m_frames + 1) + " at byte " + std::to_string(m_offset) + ": " +
                              std::to_string(cap_len) + " captured bytes run past the end of the chunk (" +
                              std::to_string(m_data.size()) + " bytes)");
    }
    if (direction > k_max_direction) {
        return tl::unexpected("record " + std::to_string(m_frames + 1) + " at byte " + std::to_string(m_offset) +
                              ": direction " + std::to_string(direction) + " is not 0, 1 or 2");
    }
    frame.ts_ns = get_le<std::int64_t>(p);
    frame.wire_len = get_le<std::uint32_t>(p + 12);
    frame.direction = static_cast<Direction>(direction);
    frame.link_type = m_link_type;
    frame.bytes = m_data.subspan(m_offset + k_chunk_record_header, cap_len);
    m_offset += k_chunk_record_header + cap_len;
    ++m_frames;
    return true;
}

}  // namespace hoptrace::store
