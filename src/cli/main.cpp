// nanoinfer command line: generate | info | tokenize. Every user error ends as one clear line on
// stderr and a non-zero exit.
#include <cstdio>
#include <exception>

#include "cli/commands.h"
#include "util/error.h"

int main(int argc, char** argv) {
  CLI::App app{"nanoinfer: a from-scratch inference engine for Llama-family models"};
  app.require_subcommand(1);
  nanoinfer::cli::add_generate_command(app);
  nanoinfer::cli::add_info_command(app);
  nanoinfer::cli::add_tokenize_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "nanoinfer: %s\n", e.what());
    return 2;
  } catch (const nanoinfer::Error& e) {
    std::fprintf(stderr, "nanoinfer: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nanoinfer: unexpected error: %s\n", e.what());
    return 1;
  }
  return 0;
}
