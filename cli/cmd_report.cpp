// hoptrace report --db FILE [--format text|json|csv|html] [-o FILE] [--flow EXPR]

#include "cli/command.hpp"
#include "cli/output_file.hpp"
#include "report/csv.hpp"
#include "report/html/page.hpp"
#include "report/json.hpp"
#include "report/model.hpp"
#include "report/text.hpp"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <optional>

namespace hoptrace::cli {

int cmd_report(const Invocation& inv) {
    std::string db_path;
    std::string format = "text";
    std::string output;
    std::string flow_expr;
    po::options_description options("options");
    // clang-format off
    options.add_options()
        ("db", po::value(&db_path)->required(), "database written by 'hoptrace import' or 'hoptrace capture'")
        ("format,f", po::value(&format)->default_value("text"),
         "text (explained in words, then tables) | json (schema hoptrace-report/1) | csv (every hop sample) | "
         "html (one self-contained page: path, ladder diagrams, latency histograms)")
        ("output,o", po::value(&output), "write the report to this file instead of stdout")
        ("flow", po::value(&flow_expr),
         "only the flows that match EXPR: terms 'proto icmp|icmpv6|udp|tcp', 'host ADDR', 'port N', 'flow ID', "
         "all of which must match (e.g. --flow 'proto udp port 5353')");
    // clang-format on
    po::variables_map vm;
    if (!parse(inv, "--db FILE [--format text|json|csv|html] [-o FILE] [--flow EXPR]", options, nullptr, vm))
        return k_exit_ok;
    if (format != "text" && format != "json" && format != "csv" && format != "html")
        throw UsageError("unknown --format '" + format + "' (text, json, csv, html)");
    std::optional<report::FlowFilter> filter;
    if (vm.count("flow") != 0U) {
        auto parsed = report::FlowFilter::parse(flow_expr);
        if (!parsed) throw UsageError("--flow: " + parsed.error());
        filter = std::move(*parsed);
    }

    store::Database db = open_to_read(db_path);
    db.begin_snapshot();  // one WAL snapshot: a correlate that runs meanwhile is never half seen
    require_nothing_spooled(db, db_path);
    warn_incomplete_points(db);
    if (db.points().empty()) throw Fatal(db_path + ": the database holds no points; import or capture first");
    if (!db.meta("correlated_ns"))
        throw Fatal(db_path + ": not correlated yet; run 'hoptrace correlate --db " + db_path + "'");

    if (std::error_code ec; !output.empty() && std::filesystem::equivalent(output, db_path, ec))
        throw UsageError("-o " + output + " is the database itself; write the report to another file");
    std::optional<OutputFile> file;  // -o: written beside the target, renamed onto it once complete
    std::optional<FdStream> file_stream;
    if (!output.empty()) {
        file.emplace(output);
        file_stream.emplace(file->fd());
    }
    std::ostream& out = file_stream ? static_cast<std::ostream&>(*file_stream) : std::cout;
    if (format == "csv") {
        report::write_csv(db, out, filter);
    } else {
        report::Selection selection{filter, std::nullopt};
        if (format == "html") selection.html = report::HtmlOptions{};
        const report::ReportModel model = report::load_report(db, selection);
        if (format == "json") out << report::render_json(model);
        else if (format == "html") out << report::render_html(model);
        else out << report::render_text(model);
    }
    out.flush();
    if (file_stream) {
        if (!*file_stream) throw Fatal(output + ": write failed: " + std::strerror(file_stream->error()));
        file->commit();
    } else if (!out) {
        throw Fatal(std::string("stdout: write failed: ") + std::strerror(errno));
    }
    return k_exit_ok;
}

}  // namespace hoptrace::cli
