#include "tracer/handles.hpp"

#include <pcap/pcap.h>

namespace hoptrace {

void CHandleDeleter::operator()(pcap* p) const noexcept { pcap_close(p); }
void CHandleDeleter::operator()(pcap_dumper* d) const noexcept { pcap_dump_close(d); }

}  // namespace hoptrace
