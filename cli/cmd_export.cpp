// hoptrace export --db FILE -o FILE.pcapng [--flow EXPR]: the capture as pcapng for Wireshark, one interface
// per point, each packet commented with its journey, hop, latency and rewrite.

#include "cli/command.hpp"
#include "cli/output_file.hpp"
#include "report/export.hpp"
#include "version.hpp"

#include <filesystem>
#include <iostream>

namespace hoptrace::cli {

int cmd_export(const Invocation& inv) {
    std::string db_path;
    std::string output;
    std::string flow_expr;
    po::options_description options("options");
    // clang-format off
    options.add_options()
        ("db", po::value(&db_path)->required(), "database written by 'hoptrace import' or 'hoptrace capture'")
        ("output,o", po::value(&output)->required(), "the pcapng file to write (replaced once complete if it exists)")
        ("flow", po::value(&flow_expr),
         "only the packets of these flows: terms 'proto icmp|icmpv6|udp|tcp', 'host ADDR', 'port N', "
         "'flow ID', separated by spaces or commas; all must match");
    // clang-format on
    po::variables_map vm;
    if (!parse(inv, "--db FILE -o FILE.pcapng [--flow EXPR]", options, nullptr, vm)) return k_exit_ok;

    report::ExportOptions opts;
    opts.application = std::string("hoptrace ").append(k_version);
    if (vm.count("flow") != 0U) {
        auto filter = report::FlowFilter::parse(flow_expr);
        if (!filter) throw UsageError(std::string("--flow '").append(flow_expr).append("': ").append(filter.error()));
        opts.flows = std::move(*filter);
    }
    if (output.empty()) throw UsageError("-o needs a file name");

    store::Database db = open_to_read(db_path);
    db.begin_snapshot();  // one WAL snapshot: a correlate that runs meanwhile is never half seen
    require_nothing_spooled(db, db_path);
    warn_incomplete_points(db);
    std::error_code ec;
    if (std::filesystem::equivalent(output, db_path, ec)) {
        throw UsageError(std::string("-o ").append(output).append(" is the database itself"));
    }
    if (db.points().empty()) throw Fatal(db_path + ": the database holds no points; import or capture first");
    if (!db.meta("correlated_ns"))
        throw Fatal(db_path + ": not correlated yet; run 'hoptrace correlate --db " + db_path + "'");

    // Written beside the target and renamed onto it once complete (or straight into a device, FIFO or link). The
    // pcapng writer opens the file by name: it gets the very file opened here, as /proc/self/fd/N.
    OutputFile file(output);
    const auto summary = report::export_pcapng(db, file.fd_path(), opts);
    if (!summary) throw Fatal(file.own_name(summary.error()));
    file.commit();
    std::cout << output << ": " << summary->packets << " packets on " << summary->interfaces << " interfaces";
    if (opts.flows) std::cout << ", " << summary->flows_selected << " of " << summary->flows << " flows";
    std::cout << "\n";
    std::cout.flush();
    if (!std::cout) throw Fatal("stdout: write failed");
    return k_exit_ok;
}

}  // namespace hoptrace::cli
