#include "store/conntrack.hpp"

namespace hoptrace::store {

void insert_conntrack(Database& db, std::int64_t ts_ns, std::string_view event,
                      std::span<const ConntrackEntry> entries) {
    auto st = db.prepare(
        "INSERT INTO conntrack (ts_ns, event, proto, orig_src, orig_dst, orig_sport, orig_dport, reply_src, "
        "reply_dst, reply_sport, reply_dport) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    Transaction txn(db);
    for (const auto& e : entries) {
        st.bind(1, ts_ns).bind(2, event).bind(3, std::int64_t{e.proto});
        st.bind(4, e.orig_src).bind(5, e.orig_dst);
        st.bind(6, std::int64_t{e.orig_sport}).bind(7, std::int64_t{e.orig_dport});
        st.bind(8, e.reply_src).bind(9, e.reply_dst);
        st.bind(10, std::int64_t{e.reply_sport}).bind(11, std::int64_t{e.reply_dport});
        st.run();
        st.reset();
    }
    txn.commit();
}

}  // namespace hoptrace::store
