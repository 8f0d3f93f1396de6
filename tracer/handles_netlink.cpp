// The libnl half of tracer/handles.hpp (apart, so that what only reads captures needs no libnl).
#include "tracer/handles.hpp"

#include <netlink/addr.h>
#include <netlink/cache.h>
#include <netlink/msg.h>
#include <netlink/socket.h>

namespace hoptrace {

void CHandleDeleter::operator()(nl_sock* s) const noexcept { nl_socket_free(s); }
void CHandleDeleter::operator()(nl_cache* c) const noexcept { nl_cache_free(c); }
void CHandleDeleter::operator()(nl_addr* a) const noexcept { nl_addr_put(a); }
void CHandleDeleter::operator()(nl_msg* m) const noexcept { nlmsg_free(m); }

}  // namespace hoptrace
