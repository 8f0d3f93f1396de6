#include "cli/command.hpp"

#include <filesystem>
#include <iostream>

namespace hoptrace::cli {

bool parse(const Invocation& inv, const std::string& synopsis, po::options_description& options,
           const po::positional_options_description* positional, po::variables_map& vm) {
    options.add_options()("help,h", "show this help");
    po::command_line_parser parser(inv.args);
    parser.options(options);
    if (positional != nullptr) parser.positional(*positional);
    po::store(parser.run(), vm);
    if (vm.count("help") != 0U) {
        std::cout << "usage: hoptrace " << inv.command << " " << synopsis << "\n\n" << options << "\n";
        return false;
    }
    po::notify(vm);
    return true;
}

store::Database open_existing(const std::string& path) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) {
        throw Fatal(path + ": no such database; create one with 'hoptrace import --db " + path + " FILE…'");
    }
    return store::Database::open(path);
}

}  // namespace hoptrace::cli
