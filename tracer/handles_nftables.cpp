// The libmnl/libnftnl half of tracer/handles.hpp (netfilter tracing, tracer/rule_trace.cpp).
#include "tracer/handles.hpp"

#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/rule.h>
#include <libnftnl/table.h>
#include <libnftnl/trace.h>

namespace hoptrace {

void CHandleDeleter::operator()(mnl_socket* s) const noexcept { mnl_socket_close(s); }
void CHandleDeleter::operator()(nftnl_table* t) const noexcept { nftnl_table_free(t); }
void CHandleDeleter::operator()(nftnl_chain* c) const noexcept { nftnl_chain_free(c); }
void CHandleDeleter::operator()(nftnl_rule* r) const noexcept { nftnl_rule_free(r); }
void CHandleDeleter::operator()(nftnl_trace* t) const noexcept { nftnl_trace_free(t); }

}  // namespace hoptrace
