// The CLI's subcommands; each lives in its own cmd_*.cpp and registers itself on the app.
// A command's callback throws nanoinfer::Error for anything the user got wrong; main() prints
// the message on one line and exits non-zero.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <vector>

namespace nanoinfer::cli {

void add_generate_command(CLI::App& app);
void add_info_command(CLI::App& app);
void add_tokenize_command(CLI::App& app);
void add_serve_command(CLI::App& app);

// "1,2,3" -> ids; throws Error naming `flag` on anything else.
std::vector<int32_t> parse_ids(const std::string& list, const std::string& flag);

}  // namespace nanoinfer::cli
