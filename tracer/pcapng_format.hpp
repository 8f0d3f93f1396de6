#pragma once
// The pcapng block and option numbers hoptrace reads (tracer/pcapng_file.cpp) and writes (report/pcapng_writer.cpp):
// one list, from the pcapng specification (draft-ietf-opsawg-pcapng).

#include <cstdint>

namespace hoptrace::pcapng {

// Block types.
inline constexpr std::uint32_t k_section_header = 0x0a0d0d0a;
inline constexpr std::uint32_t k_interface_description = 0x00000001;
inline constexpr std::uint32_t k_obsolete_packet = 0x00000002;
inline constexpr std::uint32_t k_simple_packet = 0x00000003;
inline constexpr std::uint32_t k_interface_statistics = 0x00000005;
inline constexpr std::uint32_t k_enhanced_packet = 0x00000006;
inline constexpr std::uint32_t k_byte_order_magic = 0x1a2b3c4d;

// Options (codes are per block type; the ones shared by all come first).
inline constexpr std::uint16_t k_opt_end = 0;
inline constexpr std::uint16_t k_opt_comment = 1;
inline constexpr std::uint16_t k_opt_shb_userappl = 4;
inline constexpr std::uint16_t k_opt_if_name = 2;
inline constexpr std::uint16_t k_opt_if_description = 3;
inline constexpr std::uint16_t k_opt_if_tsresol = 9;
inline constexpr std::uint16_t k_opt_if_tsoffset = 14;
inline constexpr std::uint16_t k_opt_isb_ifdrop = 5;
inline constexpr std::uint16_t k_opt_epb_flags = 2;  // pack_flags in an OPB: same code, same layout

// epb_flags bits 0-1: the direction.
inline constexpr std::uint32_t k_epb_inbound = 1;
inline constexpr std::uint32_t k_epb_outbound = 2;

}  // namespace hoptrace::pcapng
