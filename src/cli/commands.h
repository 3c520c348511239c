// The CLI's subcommands; each lives in its own cmd_*.cpp and registers itself on the app.
// A command's callback throws nanoinfer::Error for anything the user got wrong; main() prints
// the message on one line and exits non-zero.
#pragma once

#include <CLI/CLI.hpp>

namespace nanoinfer::cli {

void add_generate_command(CLI::App& app);
void add_info_command(CLI::App& app);
void add_tokenize_command(CLI::App& app);

}  // namespace nanoinfer::cli
