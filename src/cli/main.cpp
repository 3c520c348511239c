// nanoinfer command line: generate | chat | serve | bench | perplexity | info | tokenize. Every
// user error ends as one clear line on stderr and a non-zero exit.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <new>
#include <set>
#include <string>
#include <string_view>
#include <utility>

#include "cli/commands.h"
#include "dist/communicator.h"
#include "util/error.h"

namespace {

constexpr const char* kLessMemory =
    " (a smaller --max-context, --cache-tokens or --num-beams needs less)";

// In a job of several ranks a failing rank ends the whole job, so that none waits for it.
int failed(int code) {
  if (nanoinfer::launched_world_size() > 1) nanoinfer::abort_job(code);
  return code;
}

// CLI11 gives an option that takes a value the next argument, whatever it is: `--prompt --json`
// made "--json" the prompt, silently. A value that is one of its command's flags is refused.
void refuse_flags_as_values(CLI::App& cmd) {
  std::set<std::string> flags;
  for (const CLI::Option* o : std::as_const(cmd).get_options())
    for (const std::string& name : o->get_lnames()) flags.insert("--" + name);
  for (CLI::Option* o : cmd.get_options())
    if (o->get_type_size() != 0)
      o->check(CLI::Validator(
          [flags](const std::string& v) {
            return flags.count(v) != 0 ? "its value is missing (" + v + " is a flag)"
                                       : std::string();
          },
          "", "not a flag"));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"nanoinfer: a from-scratch inference engine for Llama-family models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", NANOINFER_VERSION);
  nanoinfer::cli::add_generate_command(app);
  nanoinfer::cli::add_info_command(app);
  nanoinfer::cli::add_tokenize_command(app);
  nanoinfer::cli::add_serve_command(app);
  nanoinfer::cli::add_chat_command(app);
  nanoinfer::cli::add_bench_command(app);
  nanoinfer::cli::add_perplexity_command(app);
  for (CLI::App* cmd : app.get_subcommands([](const CLI::App*) { return true; }))
    refuse_flags_as_values(*cmd);
  try {
    // CLI11 would only say that a subcommand is required.
    const std::string first = argc > 1 ? argv[1] : "";
    const std::function<bool(const CLI::App*)> named = [&first](const CLI::App* sub) {
      return sub->get_name() == first;
    };
    const bool top_flag = first == "-h" || first == "--help" || first == "--version";
    if (!top_flag && std::as_const(app).get_subcommands(named).empty()) {
      const std::string what = first.empty()     ? "a command is needed"
                               : first[0] == '-' ? "a command comes before '" + first + "'"
                                                 : "unknown command '" + first + "'";
      std::fprintf(stderr,
                   "nanoinfer: %s (generate, chat, serve, bench, perplexity, info or tokenize; "
                   "nanoinfer --help)\n",
                   what.c_str());
      return failed(2);
    }
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // A flag of one value given twice: CLI11 says "--top-k: At Most 1 required but received 2".
    std::string what = e.what();
    constexpr std::string_view kTwice = ": At Most 1 required but received ";
    if (const size_t at = what.find(kTwice); at != std::string::npos)
      what = what.substr(0, at) + ": given " + what.substr(at + kTwice.size()) +
             " times (it takes one value)";
    // A word for a number (whole numbers have their own check): "Could not convert: --x = abc".
    constexpr std::string_view kConvert = "Could not convert: ";
    if (const size_t at = what.find(" = "); what.starts_with(kConvert) && at != std::string::npos)
      what = what.substr(kConvert.size(), at - kConvert.size()) + ": expected a number, got '" +
             what.substr(at + 3) + "'";
    std::fprintf(stderr, "nanoinfer: %s\n", what.c_str());
    return failed(2);
  } catch (const nanoinfer::Error& e) {  // (the library's out of memory names the bytes)
    const std::string what = e.what();
    std::fprintf(stderr, "nanoinfer: error: %s%s\n", what.c_str(),
                 what.find("out of memory") != std::string::npos ? kLessMemory : "");
    return failed(1);
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "nanoinfer: error: out of memory%s\n", kLessMemory);
    return failed(1);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nanoinfer: unexpected error: %s\n", e.what());
    return failed(1);
  }
  // Output lost to a full disk is an error too: exit 0 would say that it was written.
  errno = 0;
  if (std::fflush(stdout) != 0 || std::ferror(stdout) != 0) {
    std::fprintf(stderr, "nanoinfer: error: writing the output failed (%s)\n",
                 errno != 0 ? std::strerror(errno) : "a write error");
    return failed(1);
  }
  return 0;
}
