// hoptrace report --db FILE [--format text|json] [-o FILE]

#include "cli/command.hpp"
#include "correlate/report.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>

namespace hoptrace::cli {

int cmd_report(const Invocation& inv) {
    std::string db_path;
    std::string format = "text";
    std::string output;
    po::options_description options("options");
    options.add_options()
        ("db", po::value(&db_path)->required(), "database written by 'hoptrace import' or 'hoptrace capture'")
        ("format,f", po::value(&format)->default_value("text"), "text | json (schema hoptrace-report/1)")
        ("output,o", po::value(&output), "write the report to this file instead of stdout");
    po::variables_map vm;
    if (!parse(inv, "--db FILE [--format text|json] [-o FILE]", options, nullptr, vm)) return k_exit_ok;
    if (format != "text" && format != "json") throw UsageError("unknown --format '" + format + "' (text, json)");

    store::Database db = open_existing(db_path);
    if (db.points().empty()) throw Fatal(db_path + ": the database holds no points; import or capture first");
    if (!db.meta("correlated_ns"))
        throw Fatal(db_path + ": not correlated yet; run 'hoptrace correlate --db " + db_path + "'");
    const auto model = correlate::build_report(db);
    const std::string text = format == "json" ? correlate::render_json(model) : correlate::render_text(model);
    if (output.empty()) {
        std::cout << text;
        std::cout.flush();
        if (!std::cout) throw Fatal("stdout: write failed");
        return k_exit_ok;
    }
    std::ofstream out(output, std::ios::binary | std::ios::trunc);
    if (!out) throw Fatal(output + ": cannot write the report: " + std::strerror(errno));
    out << text;
    out.close();
    if (!out) throw Fatal(output + ": write failed: " + std::strerror(errno));
    return k_exit_ok;
}

}  // namespace hoptrace::cli
