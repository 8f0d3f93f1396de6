// hoptrace report --db FILE [--format text|json|csv] [-o FILE]

#include "cli/command.hpp"
#include "correlate/report.hpp"

#include <cerrno>
#include <cstring>
#include <filesystem>
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
        ("format,f", po::value(&format)->default_value("text"),
         "text (explained in words, then tables) | json (schema hoptrace-report/1) | csv (every hop sample)")
        ("output,o", po::value(&output), "write the report to this file instead of stdout");
    po::variables_map vm;
    if (!parse(inv, "--db FILE [--format text|json|csv] [-o FILE]", options, nullptr, vm)) return k_exit_ok;
    if (format != "text" && format != "json" && format != "csv")
        throw UsageError("unknown --format '" + format + "' (text, json, csv)");

    store::Database db = open_existing(db_path);
    if (db.points().empty()) throw Fatal(db_path + ": the database holds no points; import or capture first");
    if (!db.meta("correlated_ns"))
        throw Fatal(db_path + ": not correlated yet; run 'hoptrace correlate --db " + db_path + "'");

    std::ofstream file;
    if (!output.empty()) {
        file.open(output, std::ios::binary | std::ios::trunc);
        if (!file) throw Fatal(output + ": cannot write the report: " + std::strerror(errno));
    }
    std::ostream& out = output.empty() ? std::cout : file;
    if (format == "csv") {
        correlate::write_csv(db, out);
    } else {
        const auto model = correlate::build_report(db);
        out << (format == "json" ? correlate::render_json(model) : correlate::render_text(model));
    }
    out.flush();
    if (!out) {
        const std::string where = output.empty() ? "stdout" : output;
        if (!output.empty()) {
            file.close();
            std::error_code ec;
            std::filesystem::remove(output, ec);
        }
        throw Fatal(where + ": write failed: " + std::strerror(errno));
    }
    return k_exit_ok;
}

}  // namespace hoptrace::cli
