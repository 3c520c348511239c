// The Python module `nanoinfer` (pybind11): the engine with generate() for a batch of prompts and
// stream() for one request's text as it comes, the sampling parameters, the tokenizer. Prompts are
// text, token ids or chat messages; the library's Error arrives as nanoinfer.Error. The engine
// runs without the GIL and one call at a time (a lock per engine); docs/pseudocode/python.md.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "nanoinfer/engine.h"
#include "nanoinfer/tokenizer.h"
#include "util/fork_guard.h"
#include "util/str_cat.h"

namespace py = pybind11;

namespace nanoinfer {
namespace {

// The engine and what the module keeps beside it: a lock (the engine serves one call at a time)
// and the number of streams not yet read to their end or closed.
struct PyEngine {
  explicit PyEngine(const EngineOptions& o) : engine(o), profile(o.profile) {}
  Engine engine;
  const bool profile;  // (profile_report() has nothing to say without it)
  std::timed_mutex mu;
  std::atomic<std::thread::id> owner{};  // the thread holding mu
  int open_streams = 0;
  const pid_t pid = getpid();  // the process that made it
};

// Pending signals, looked for while the engine runs without the GIL: only on the main thread,
// the one where Python runs its handlers (another never takes the GIL while it generates). The
// first handler that raised (Ctrl-C: KeyboardInterrupt) keeps its exception, raised by rethrow()
// once the engine call has returned.
class SignalWatch {
 public:
  SignalWatch()
      : main_thread_(PyThread_get_thread_ident() == py::module_::import("threading")
                                                        .attr("main_thread")()
                                                        .attr("ident")
                                                        .cast<unsigned long>()) {}
  // Runs pending handlers under the GIL (once one raised, no more); whether one has raised.
  bool raised() {
    if (main_thread_ && type_ == nullptr) {
      const py::gil_scoped_acquire gil;
      if (PyErr_CheckSignals() != 0) PyErr_Fetch(&type_, &value_, &trace_);
    }
    return type_ != nullptr;
  }
  void rethrow() {
    if (type_ == nullptr) return;
    PyErr_Restore(std::exchange(type_, nullptr), value_, trace_);
    throw py::error_already_set();
  }

 private:
  bool main_thread_;
  PyObject *type_ = nullptr, *value_ = nullptr, *trace_ = nullptr;
};

// Runs f on the engine under its lock, without the GIL. The same thread asking again (a Python
// signal handler that generate()'s token callback ran, calling the engine) is an Error, not a
// deadlock; one waiting for another thread's call hears Ctrl-C (on the main thread: it waited
// without the GIL until that call ended). The GIL comes back outside any destructor: where Python
// ends a daemon thread at exit (PyEval_RestoreThread exits the thread), the thread unwinds instead
// of aborting the process. In a process forked after the engine was made (os.fork,
// multiprocessing's default start), its OpenMP threads (or CUDA context) are not there: a call
// would hang, so it is an Error.
template <typename F>
auto locked(PyEngine& pe, F&& f) -> decltype(f()) {
  if (getpid() != pe.pid)
    throw Error(
        "this engine was made before the process forked, and its threads did not come "
        "along: make the engine in this process (multiprocessing: the 'spawn' start "
        "method)");
  if (pe.owner.load() == std::this_thread::get_id())
    throw Error(
        "the engine is in a call on this thread: a signal handler cannot use it until "
        "that call returns");
  using Result = decltype(f());
  std::conditional_t<std::is_void_v<Result>, bool, std::optional<Result>> result;
  std::exception_ptr error;
  std::unique_lock lock(pe.mu, std::try_to_lock);
  std::optional<SignalWatch> signals;  // (made with the GIL: it asks Python for the main thread)
  if (!lock.owns_lock()) signals.emplace();
  PyThreadState* const saved = PyEval_SaveThread();
  if (!lock.owns_lock()) {  // another thread's call: waited for, Ctrl-C heard every 50 ms
    while (!lock.try_lock_for(std::chrono::milliseconds(50)) && !signals->raised()) {
    }
    if (!lock.owns_lock()) {
      PyEval_RestoreThread(saved);
      signals->rethrow();
    }
  }
  pe.owner = std::this_thread::get_id();
  try {
    if constexpr (std::is_void_v<Result>)
      f();
    else
      result.emplace(f());
  } catch (...) {
    error = std::current_exception();
  }
  pe.owner = std::thread::id();
  lock.unlock();
  PyEval_RestoreThread(saved);
  if (error) std::rethrow_exception(error);
  if constexpr (!std::is_void_v<Result>) return std::move(*result);
}

// An unknown sampling keyword: this engine's name where HF's or vLLM's differs, and the list.
[[noreturn]] void unknown_sampling_parameter(const std::string& name, const py::handle type,
                                             const py::handle property) {
  static const std::map<std::string, std::string> kOurs = {
      {"max_tokens", "max_new_tokens"},
      {"max_length", "max_new_tokens, which counts the new tokens only"},
      {"stop_token_ids", "eos_token_ids, which replaces the model's EOS ids: list them too"},
      {"eos_token_id", "eos_token_ids"},
      {"stop_strings", "stop"},
      {"do_sample", "temperature: 0 is greedy, above 0 samples"},
      {"n", "num_beams and num_return_sequences (beam search); sampling returns one text"}};
  std::string message = "unknown sampling parameter '" + name + "'";
  if (const auto it = kOurs.find(name); it != kOurs.end())
    message += " (this engine's: " + it->second + ")";
  std::string known;
  for (const auto& [key, value] : py::dict(type.attr("__dict__")))
    if (py::isinstance(value, property))
      known.append(known.empty() ? "" : ", ").append(py::cast<std::string>(key));
  throw py::type_error(message + "; the parameters: " + known);
}

// Keyword arguments onto a SamplingParams, through its Python properties (so each value is checked
// and converted as an attribute assignment would be, and a bad one named as it names it). None
// keeps a field's default, as HF's and vLLM's keywords read it.
SamplingParams params_from(const py::kwargs& kw) {
  SamplingParams p;
  const py::object view = py::cast(&p, py::return_value_policy::reference);
  const py::object property = py::module_::import("builtins").attr("property");
  for (const auto& [key, value] : kw) {
    const py::object field = py::getattr(py::type::of(view), key, py::none());
    if (!py::isinstance(field, property))
      unknown_sampling_parameter(py::cast<std::string>(key), py::type::of(view), property);
    if (!value.is_none()) py::setattr(view, key, value);
  }
  return p;
}

// Its fields by name, through the class's properties: the keyword arguments that make it again.
py::dict fields_of(const SamplingParams& p) {
  const py::object view = py::cast(p);
  const py::object property = py::module_::import("builtins").attr("property");
  py::dict fields;
  for (const auto& [name, attribute] : py::type::of(view).attr("__dict__").cast<py::dict>())
    if (py::isinstance(attribute, property)) fields[name] = py::getattr(view, name);
  return fields;
}

// A str's UTF-8 bytes; ValueError naming `what` for a lone surrogate, which has none.
std::string utf8_of(const py::handle s, const std::string& what) {
  try {
    return py::cast<std::string>(s);
  } catch (const py::cast_error&) {
    throw py::value_error(what + " must be UTF-8 (it holds a lone surrogate)");
  }
}

// vLLM's prompt dicts ({"prompt": ...}, {"prompt_token_ids": [...]}) are not prompts here.
void refuse_prompt_dict(const py::dict& d) {
  if (!d.contains("role") && (d.contains("prompt") || d.contains("prompt_token_ids")))
    throw py::type_error(
        "a prompt is a str, a list of token ids or a list of chat messages: vLLM's prompt "
        "dicts ({'prompt': ...}, {'prompt_token_ids': [...]}) are not taken, give what they "
        "hold");
}

std::vector<ChatMessage> messages_from(const py::handle& messages) {
  if (!py::isinstance<py::list>(messages) && !py::isinstance<py::tuple>(messages))
    throw py::type_error("messages must be a list of chat messages");
  std::vector<ChatMessage> out;
  for (const py::handle m : messages) {
    if (!py::isinstance<py::dict>(m))
      throw py::type_error("a chat message is a dict with 'role' and 'content'");
    const py::dict d = py::reinterpret_borrow<py::dict>(m);
    refuse_prompt_dict(d);
    if (!d.contains("role") || !d.contains("content") || !py::isinstance<py::str>(d["role"]) ||
        !py::isinstance<py::str>(d["content"]))
      throw py::type_error("a chat message is a dict with 'role' and 'content' (str)");
    // (the template would drop them: the model would read another conversation; as the server)
    for (const char* key : {"tool_calls", "function_call"})
      if (d.contains(key) && !d[key].is_none() &&
          !(py::isinstance<py::sequence>(d[key]) && py::len(d[key]) == 0))
        throw py::value_error(std::string("a chat message's '") + key +
                              "': tool and function calls are not rendered by the chat templates");
    out.push_back({utf8_of(d["role"], "a chat message's role"),
                   utf8_of(d["content"], "a chat message's content")});
  }
  return out;
}

// A path given as a str or an os.PathLike (pathlib.Path).
std::string path_of(const py::handle& path, const char* name) {
  const py::object p = py::reinterpret_borrow<py::object>(path);
  if (!py::isinstance<py::str>(p) && !py::hasattr(p, "__fspath__"))
    throw py::type_error(std::string(name) + " must be a path (a str or an os.PathLike)");
  return utf8_of(py::module_::import("os").attr("fspath")(p), name);
}

const Tokenizer& tokenizer_of(const Engine& e) {
  if (e.tokenizer() == nullptr)
    throw Error("the model has no tokenizer: give prompts as lists of token ids");
  return *e.tokenizer();
}

// A token id: a Python int or what stands for one (numpy's integers: __index__), not a bool.
// (numpy's arrays take __index__ too, and fail in it unless 0-d: an array is not an id)
bool is_token_id(const py::handle v) {
  if (PyBool_Check(v.ptr()) || PyIndex_Check(v.ptr()) == 0) return false;
  return !py::hasattr(v, "ndim") || py::cast<int>(v.attr("ndim")) == 0;
}

// A value as an error message shows it: its repr (cut at 40 characters) and its type.
std::string shown(const py::handle v) {
  return py::cast<std::string>(py::repr(v)).substr(0, 40) + " (" +
         py::cast<std::string>(py::type::of(v).attr("__name__")) + ")";
}

// A numpy array (anything with ndim and tolist) as Python lists: a 1-D array of ids is a list of
// ids, a 2-D one a list of prompts; anything else as it is.
py::object as_lists(const py::handle v) {
  if (py::hasattr(v, "ndim") && py::hasattr(v, "tolist") && py::cast<int>(v.attr("ndim")) > 0)
    return v.attr("tolist")();
  return py::reinterpret_borrow<py::object>(v);
}

// A number, flag, text or list of token ids of SamplingParams or EngineOptions as Python writes
// it, refusing what Python would coerce: a bool for a number or an id (True read as 1), a float
// for an integer, anything but a bool for a flag (None read as False), a number beyond a float.
template <class T>
T strict(const py::handle v, const char* name) {
  const bool flag = PyBool_Check(v.ptr()) != 0;
  if constexpr (std::is_same_v<T, std::string>) {
    if (!py::isinstance<py::str>(v)) throw py::type_error(std::string(name) + " must be a str");
    return utf8_of(v, name);
  } else if constexpr (std::is_same_v<T, bool>) {
    if (!flag) throw py::type_error(std::string(name) + " must be True or False");
    return v.ptr() == Py_True;
  } else if constexpr (std::is_same_v<T, std::vector<int32_t>>) {  // token ids: any sequence
    if (py::isinstance<py::str>(v) || !py::isinstance<py::iterable>(v))
      throw py::type_error(std::string(name) + " must be a list of token ids, got " + shown(v));
    T ids;
    const std::string each = std::string(name) + ": a token id";
    for (const py::handle id : v) {
      if (!is_token_id(id)) throw py::type_error(each + " must be an integer, got " + shown(id));
      ids.push_back(strict<int32_t>(id, each.c_str()));
    }
    return ids;
  } else if constexpr (std::is_integral_v<T>) {
    if (!is_token_id(v)) throw py::type_error(std::string(name) + " must be an integer");
    int overflow = 0;
    const long long x = PyLong_AsLongLongAndOverflow(
        py::int_(py::reinterpret_borrow<py::object>(v)).ptr(), &overflow);
    if (overflow != 0 || x < std::numeric_limits<T>::min() || x > std::numeric_limits<T>::max())
      throw py::value_error(std::string(name) + " must be an integer in [" +
                            std::to_string(std::numeric_limits<T>::min()) + ", " +
                            std::to_string(std::numeric_limits<T>::max()) + "], got " +
                            py::cast<std::string>(py::str(v)));
    return static_cast<T>(x);
  } else {
    if (flag || PyNumber_Check(v.ptr()) == 0 || PyComplex_Check(v.ptr()) != 0)
      throw py::type_error(std::string(name) + " must be a number");
    const double x = PyFloat_AsDouble(v.ptr());
    const bool beyond_double = x == -1.0 && PyErr_ExceptionMatches(PyExc_OverflowError) != 0;
    if (x == -1.0 && PyErr_Occurred() != nullptr && !beyond_double) throw py::error_already_set();
    PyErr_Clear();
    if (beyond_double || (std::isfinite(x) && std::abs(x) > std::numeric_limits<T>::max()))
      throw py::value_error(std::string(name) + " is beyond a " + std::to_string(sizeof(T) * 8) +
                            "-bit float, got " + py::cast<std::string>(py::repr(v)).substr(0, 40));
    return static_cast<T>(x);
  }
}

// strict<T>(v, name), whose TypeError names the value too: an argument or an engine option.
template <class T>
T argument(const py::handle v, const char* name) {
  if constexpr (std::is_same_v<T, std::vector<int32_t>>) {
    return strict<T>(v, name);  // (it names the value, or the item that is no id)
  } else {
    try {
      return strict<T>(v, name);
    } catch (const py::type_error& e) {
      throw py::type_error(std::string(e.what()) + ", got " + shown(v));
    }
  }
}

template <class T>
auto read_field(T SamplingParams::*f) {
  return [f](const SamplingParams& p) { return p.*f; };
}
template <class T>
auto write_field(T SamplingParams::*f, const char* name) {
  return [f, name](SamplingParams& p, const py::object& v) { p.*f = argument<T>(v, name); };
}

bool is_messages(const py::handle& prompt) {
  return (py::isinstance<py::list>(prompt) || py::isinstance<py::tuple>(prompt)) &&
         py::len(prompt) > 0 &&
         py::isinstance<py::dict>(py::reinterpret_borrow<py::sequence>(prompt)[0]);
}

// The chat options of generate() and stream(): chat=True applies the template to text prompts,
// date_string is the date the Llama-3.1/3.2 templates write (given, some prompt must use one).
struct ChatOptions {
  bool chat = false;
  std::optional<std::string> date;

  ChatOptions(const py::object& chat_flag, const py::object& date_string)
      : chat(argument<bool>(chat_flag, "chat")) {
    if (!date_string.is_none()) date = argument<std::string>(date_string, "date_string");
  }
  void check_date_used(const py::list& prompts) const {
    if (!date || chat || prompts.empty()) return;
    for (const py::handle p : prompts)
      if (is_messages(p)) return;
    throw py::value_error(
        "date_string is written by a chat template: give chat=True or chat messages");
  }
};

// One prompt: text (with the model's chat template when chat is set), a list of chat messages
// (the chat template, always), or a list of token ids.
std::vector<int32_t> prompt_ids(const Engine& e, const py::handle& given, const ChatOptions& o) {
  const py::object prompt = as_lists(given);  // (a numpy array of ids)
  if (py::isinstance<py::str>(prompt)) {
    const Tokenizer& tok = tokenizer_of(e);
    const std::string text = utf8_of(prompt, "a prompt's text");
    // A chat template already holds the special tokens it needs.
    return o.chat
               ? tok.encode(tok.apply_chat_template({{"user", text}}, true, false, o.date), false)
               : tok.encode(text, true);
  }
  if (is_messages(prompt)) {
    // A final assistant message is begun for the model, which goes on with it (as HF's
    // text-generation pipeline does); after any other, the reply starts a new turn.
    const std::vector<ChatMessage> messages = messages_from(prompt);
    const Tokenizer& tok = tokenizer_of(e);
    const bool go_on = messages.back().role == "assistant";
    return tok.encode(tok.apply_chat_template(messages, !go_on, go_on, o.date), false);
  }
  if (py::isinstance<py::list>(prompt) || py::isinstance<py::tuple>(prompt)) {
    const py::list items(py::reinterpret_borrow<py::object>(prompt));
    if (o.chat &&  // (as the CLI notes it for --prompt-ids)
        PyErr_WarnEx(PyExc_UserWarning,
                     "chat=True: the chat template applies to text prompts only, not to token ids",
                     1) != 0)
      throw py::error_already_set();  // (warnings turned into errors)
    std::vector<int32_t> ids;
    for (const py::handle id : items) {
      if (!is_token_id(id))
        throw py::type_error(
            "a prompt given as a list holds token ids (int) or chat messages, not " +
            py::cast<std::string>(py::repr(id)));
      const auto index = py::reinterpret_steal<py::object>(PyNumber_Index(id.ptr()));
      if (!index) throw py::error_already_set();
      int overflow = 0;  // (past int32: the engine's own check would never see the value)
      const long long v = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
      if (overflow != 0 || v < INT32_MIN || v > INT32_MAX)
        throw Error("token id " + py::cast<std::string>(py::str(id)) +
                    " is outside the vocabulary (" + std::to_string(e.config().vocab_size) +
                    " ids)");
      ids.push_back(static_cast<int32_t>(v));
    }
    return ids;
  }
  throw py::type_error("a prompt is a str, a list of token ids or a list of chat messages");
}

// params: None (the keyword arguments make one for every prompt), one SamplingParams for all, or
// a list of them, one per prompt.
std::vector<SamplingParams> params_for(size_t n, const py::object& params, const py::kwargs& kw) {
  if (params.is_none()) return std::vector<SamplingParams>(n, params_from(kw));
  if (!kw.empty())
    throw py::type_error("give sampling parameters either as `params` or as keywords, not both");
  if (py::isinstance<SamplingParams>(params))
    return std::vector<SamplingParams>(n, py::cast<SamplingParams>(params));
  std::vector<SamplingParams> list;
  try {
    list = py::cast<std::vector<SamplingParams>>(params);
  } catch (const py::cast_error&) {
    throw py::type_error("params: a SamplingParams, or a list of them (one per prompt)");
  }
  if (list.size() != n)
    throw py::value_error(count_of(std::ssize(list), "sampling parameter") + " for " +
                          count_of(static_cast<int64_t>(n), "prompt"));
  return list;
}

// The keyword arguments of Engine(): EngineOptions' fields, each read as strict<> reads a
// sampling parameter (config: a path).
struct EngineOption {
  const char* name;
  std::function<void(EngineOptions&, const py::handle&)> set;
  std::function<std::string(const EngineOptions&)> show;  // its default, as Python writes it
};

template <class T>
EngineOption option(const char* name, T EngineOptions::*f) {
  return {name, [name, f](EngineOptions& o, const py::handle& v) { o.*f = argument<T>(v, name); },
          [f](const EngineOptions& o) { return py::cast<std::string>(py::repr(py::cast(o.*f))); }};
}

const std::vector<EngineOption>& engine_option_list() {
  static const std::vector<EngineOption> list = {
      option("backend", &EngineOptions::backend),
      option("max_context", &EngineOptions::max_context),
      option("cache_tokens", &EngineOptions::cache_tokens),
      option("block_size", &EngineOptions::block_size),
      option("max_step_tokens", &EngineOptions::max_step_tokens),
      option("rope_cache", &EngineOptions::rope_cache),
      option("sink_tokens", &EngineOptions::sink_tokens),
      option("window", &EngineOptions::window),
      option("no_rope", &EngineOptions::no_rope),
      option("dtype", &EngineOptions::dtype),
      option("cuda_graphs", &EngineOptions::cuda_graphs),
      option("keep_blocks", &EngineOptions::keep_blocks),
      option("warmup", &EngineOptions::warmup),
      option("profile", &EngineOptions::profile),
      option("pick_on_device", &EngineOptions::pick_on_device),
      option("prefix_reuse", &EngineOptions::prefix_reuse),
      option("random_weights", &EngineOptions::random_weights),
      {"config", [](EngineOptions& o, const py::handle& v) { o.config = path_of(v, "config"); },
       [](const EngineOptions& o) { return py::cast<std::string>(py::repr(py::str(o.config))); }},
  };
  return list;
}

[[noreturn]] void unknown_option(const std::string& name) {
  std::string known;
  for (const EngineOption& e : engine_option_list())
    known.append(known.empty() ? "" : ", ").append(e.name);
  throw py::type_error("unknown engine option '" + name + "' (the options: " + known + ")");
}

EngineOptions engine_options(const py::kwargs& kw) {
  EngineOptions o;
  const std::vector<EngineOption>& list = engine_option_list();
  for (const auto& [key, value] : kw) {
    const auto name = py::cast<std::string>(key);
    const auto it = std::find_if(list.begin(), list.end(),
                                 [&](const EngineOption& e) { return name == e.name; });
    if (it == list.end()) unknown_option(name);
    it->set(o, value);
  }
  return o;
}

std::string engine_doc() {
  std::string doc =
      "Engine(model, **options): loads a model, a HF directory, a .gguf file or \"default\" (a "
      "str or os.PathLike). The options are the engine's (the CLI's engine flags; cuda_graphs, "
      "warmup and prefix_reuse=False are --no-graph, --no-warmup and --no-prefix-reuse), with "
      "their defaults: ";
  const EngineOptions d;
  const char* sep = "";
  for (const EngineOption& e : engine_option_list()) {
    doc.append(sep).append(e.name).append("=").append(e.show(d));
    sep = ", ";
  }
  return doc;
}

// A request whose user left max_new_tokens unset (no `params` and no such keyword) goes to the end
// of the context where the default 128 would not fit, as the CLI's and the server's do.
void fit_unset_length(const Engine& e, const py::object& params, const py::kwargs& kw,
                      GenerationRequest& r) {
  if (params.is_none() && (!kw.contains("max_new_tokens") || kw["max_new_tokens"].is_none()))
    e.fit_to_room(r);
}

// Runs what closed streams left in the engine to its end, so that generate() may run.
void settle(PyEngine& pe) {
  if (pe.open_streams > 0)
    throw Error("a stream of this engine is still open: read it to its end or close() it first");
  while (pe.engine.active() > 0) pe.engine.step();
}

// generate() while streams are open (this thread's or another's): the requests join the streams'
// run (Engine::submit) and the steps that finish them advance the streams too, whose pieces wait
// for their next(). A request the engine refuses cancels those submitted before it. The outputs
// live in a shared block: a step that throws leaves requests whose on_done comes later.
std::vector<GenerationOutput> join_streams(PyEngine& pe,
                                           const std::vector<GenerationRequest>& requests,
                                           const TokenCallback& watch, const StepCallback& go_on) {
  const auto outs = std::make_shared<std::vector<std::optional<GenerationOutput>>>(requests.size());
  std::vector<size_t> ids;
  try {
    for (size_t i = 0; i < requests.size(); ++i)
      ids.push_back(pe.engine.submit(requests[i], watch, [outs, i](size_t, GenerationOutput&& o) {
        (*outs)[i] = std::move(o);
      }));
  } catch (...) {
    for (const size_t id : ids) pe.engine.cancel(id);
    throw;
  }
  while (std::any_of(outs->begin(), outs->end(), [](const auto& o) { return !o; })) {
    pe.engine.step();
    if (go_on()) continue;  // (a stop heard between steps: Ctrl-C in a long prefill)
    for (const size_t id : ids) pe.engine.cancel(id);
  }
  std::vector<GenerationOutput> out;
  for (auto& o : *outs) out.push_back(std::move(*o));
  return out;
}

// An argument given under HF's or vLLM's name (theirs, a keyword) where ours was not given:
// taken out of the keywords (vLLM's sampling_params, HF's conversation and token_ids).
py::object theirs_or(const py::object& given, const py::kwargs& kw, const char* ours,
                     const char* theirs) {
  if (!kw.contains(theirs)) return given;
  if (!given.is_none())
    throw py::type_error(std::string("give ") + ours + " or " + theirs + ", not both");
  py::object v = kw[theirs];
  PyDict_DelItemString(kw.ptr(), theirs);
  return v;
}

// What is left of a tokenizer method's keywords (HF's others: return_tensors, truncation,
// clean_up_tokenization_spaces, tools, ...): a TypeError naming it and what the method takes.
void refuse_the_rest(const char* method, const py::kwargs& kw, const char* takes) {
  for (const auto& [key, value] : kw)
    throw py::type_error(std::string(method) + "() does not take '" + py::cast<std::string>(key) +
                         "' (it takes " + takes + ")");
}

std::vector<GenerationOutput> generate(PyEngine& pe, const py::object& given,
                                       const py::object& params_given, const py::object& chat_flag,
                                       const py::object& date, const py::kwargs& kw) {
  const ChatOptions chat(chat_flag, date);
  const py::object params = theirs_or(params_given, kw, "params", "sampling_params");
  const py::object prompts = as_lists(given);  // (a numpy array: one prompt, or a row each)
  py::list items;
  const bool listed = py::isinstance<py::list>(prompts) || py::isinstance<py::tuple>(prompts);
  py::object first = py::none();
  if (listed && py::len(prompts) > 0) first = py::list(prompts)[0];
  if (py::isinstance<py::str>(prompts) || py::isinstance<py::dict>(first) || is_token_id(first)) {
    items.append(prompts);  // one prompt: a text, one conversation, or one list of token ids
  } else if (listed) {
    items = py::list(prompts);
  } else {
    if (py::isinstance<py::dict>(prompts)) {
      refuse_prompt_dict(py::reinterpret_borrow<py::dict>(prompts));
      throw py::type_error(
          "prompts: a str or a list of prompts, not a dict (a conversation is a list of "
          "messages: [{'role': ..., 'content': ...}])");
    }
    throw py::type_error("prompts: a str or a list of prompts, got " + shown(prompts));
  }
  chat.check_date_used(items);
  const std::vector<SamplingParams> ps = params_for(items.size(), params, kw);
  std::vector<GenerationRequest> requests;
  for (size_t i = 0; i < items.size(); ++i) {
    requests.push_back({prompt_ids(pe.engine, items[i], chat), ps[i]});
    fit_unset_length(pe.engine, params, kw, requests.back());
  }
  // Ctrl-C (a signal handler that raises) stops the batch: on the main thread, the one where
  // Python runs its handlers, each token and each step's end look for pending signals under the
  // GIL, the requests end (at their next token, or cancelled after the step: a long prompt's
  // chunks and beam searches too), and the handler's exception is raised once the engine has
  // returned. Another thread never takes the GIL while it generates.
  SignalWatch signals;
  // Between steps too: a long prompt's chunks (max_step_tokens) give no token to look on.
  const StepCallback go_on = [&] { return !signals.raised(); };
  const TokenCallback watch = [&](size_t, int32_t, const std::string&) { return go_on(); };
  std::vector<GenerationOutput> out = locked(pe, [&] {
    if (pe.open_streams > 0) return join_streams(pe, requests, watch, go_on);
    settle(pe);
    return pe.engine.generate(requests, watch, go_on);
  });
  signals.rethrow();
  return out;
}

// One request's text, piece by piece, as the engine produces it (a model without tokenizer has
// no text: its ids are in token_ids). The engine advances while the stream is read (other streams
// of the engine advance with it); closing a stream stops its request.
class Stream {
 public:
  Stream(std::shared_ptr<PyEngine> pe, const GenerationRequest& request) : pe_(std::move(pe)) {
    const std::shared_ptr<State> st = state_;
    TokenCallback on_token = [st](size_t, int32_t token, const std::string& piece) {
      st->ids.push_back(token);
      if (!piece.empty()) st->pieces.push_back(piece);
      st->streamed += piece.size();
      return !st->closed;
    };
    DoneCallback on_done = [st](size_t, GenerationOutput&& out) { st->out = std::move(out); };
    locked(*pe_, [&] {
      id_ = pe_->engine.submit(request, on_token, on_done);
      ++pe_->open_streams;
      counted_ = true;
    });
  }
  ~Stream() {
    try {
      close();
    } catch (const Error&) {  // (collected in a signal handler during generate(): left open)
    }
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // Steps until this stream has a piece. Ctrl-C (on the main thread, where Python runs its
  // handlers) is looked for after each step that gave none (tokens without text: a model
  // without a tokenizer, held-back UTF-8), and raised with the stream still open.
  std::string next() {
    SignalWatch signals;
    bool interrupted = false;
    bool failed = false;
    const std::optional<std::string> piece = locked(*pe_, [&] {
      State& st = *state_;
      while (st.pieces.empty() && !st.out && !st.closed && !interrupted) {
        pe_->engine.step();
        interrupted = st.pieces.empty() && !st.out && signals.raised();
      }
      std::optional<std::string> p;
      if (!st.closed && !interrupted) p = st.take_piece();  // (closed: none, as a generator)
      if (st.out) uncount();
      failed = st.out && st.out->finish_reason == "error" && !st.closed;
      return p;
    });
    signals.rethrow();
    if (!piece && failed)  // (whichever call ran the failed step raised its exception)
      throw Error(
          "this stream's request ended in a step that failed (finish_reason 'error'): its text "
          "is cut short");
    if (!piece) throw py::stop_iteration();
    return *piece;
  }

  // Ends the request: between steps at once (Engine::cancel: finish_reason "cancelled", the
  // output here now). On the thread in an engine call (a signal handler dropped the stream during
  // another stream's next()) the lock is this thread's already: closed in place, where the
  // destructor's Error had left it counted open and every later generate() refused, and the
  // request stops at its next token.
  void close() {
    const auto close_held = [&](bool between_steps) {
      state_->closed = true;
      if (between_steps && !state_->out) pe_->engine.cancel(id_);
      uncount();
    };
    if (pe_->owner.load() == std::this_thread::get_id()) return close_held(false);
    locked(*pe_, [&] { close_held(true); });
  }

  std::optional<GenerationOutput> output() const {
    return locked(*pe_, [&] { return state_->out; });
  }

  std::vector<int32_t> token_ids() const {
    return locked(*pe_, [&] { return state_->out ? state_->out->token_ids : state_->ids; });
  }

 private:
  struct State {
    std::deque<std::string> pieces;
    std::vector<int32_t> ids;  // generated so far
    size_t streamed = 0;       // bytes of text the callback has seen
    std::optional<GenerationOutput> out;
    bool closed = false;

    std::optional<std::string> take_piece() {
      if (!pieces.empty()) {
        std::string p = std::move(pieces.front());
        pieces.pop_front();
        return p;
      }
      if (!out || streamed == out->text.size()) return std::nullopt;
      // Text the engine held back until the end (a final flush) comes last.
      std::string rest = out->text.substr(streamed);
      streamed = out->text.size();
      return rest;
    }
  };
  void uncount() {
    if (counted_) --pe_->open_streams;
    counted_ = false;
  }
  std::shared_ptr<PyEngine> pe_;
  std::shared_ptr<State> state_ = std::make_shared<State>();
  size_t id_ = 0;  // the engine's request
  bool counted_ = false;
};

py::dict stats_dict(const GenerationStats& s) {
  py::dict d;
  d["prefill_ms"] = s.prefill_ms;
  d["decode_ms"] = s.decode_ms;
  d["prefill_tokens"] = s.prefill_tokens;
  d["reused_prompt_tokens"] = s.reused_prompt_tokens;
  d["decode_tokens"] = s.decode_tokens;
  d["decode_steps"] = s.decode_steps;
  d["decode_tokens_per_s"] = s.decode_tokens_per_s();
  py::list steps;
  for (const StepStats& t : s.steps) {
    py::dict step;
    step["start_ms"] = t.start_ms;
    step["ms"] = t.ms;
    step["tokens"] = t.tokens;
    step["sequences"] = t.sequences;
    step["waiting"] = t.waiting;
    step["cache_used"] = t.cache_used;
    step["cache_allocated"] = t.cache_allocated;
    steps.append(step);
  }
  d["steps"] = steps;
  d["graph_captures"] = s.graph_captures;
  return d;
}

py::dict config_dict(const ModelConfig& c) {
  py::dict d;
  d["architecture"] = c.architecture;
  d["vocab_size"] = c.vocab_size;
  d["hidden_size"] = c.hidden_size;
  d["intermediate_size"] = c.intermediate_size;
  d["num_layers"] = c.num_layers;
  d["num_heads"] = c.num_heads;
  d["num_kv_heads"] = c.num_kv_heads;
  d["head_dim"] = c.head_dim;
  d["max_position_embeddings"] = c.max_position_embeddings;
  d["eos_token_ids"] = c.eos_token_ids;
  d["parameters"] = c.parameter_count();
  return d;
}

}  // namespace
}  // namespace nanoinfer

PYBIND11_MODULE(_nanoinfer, m) {  // the extension inside the package nanoinfer (__init__.py)
  using namespace nanoinfer;
  m.doc() = "nanoinfer: a Llama-family inference engine (C++/CUDA)";
  m.attr("__version__") = NANOINFER_VERSION;
  py::register_exception<Error>(m, "Error", PyExc_RuntimeError);
  m.def("default_model_path", &default_model_path,
        "Where the default model (SmolLM2-135M-Instruct, Q4_1 GGUF) is cached");

  py::class_<SamplingParams> sp(m, "SamplingParams",
                                "Per-request sampling; SamplingParams(temperature=0.7, top_p=0.9)");
  sp.attr("__hash__") = py::none();  // (mutable, compared by value)
  sp.def(py::init([](const py::kwargs& kw) { return params_from(kw); }),
         "Any field below by keyword (SamplingParams(temperature=0.7, seed=3)); the others keep "
         "their defaults. An unknown keyword or a value a field does not take is a TypeError")
      // SamplingParams(the fields that differ from the defaults); equal when every field is;
      // copied and pickled as its fields (copy.copy, multiprocessing).
      .def("__repr__",
           [](const SamplingParams& p) {
             const py::dict defaults = fields_of(SamplingParams{});
             std::string shown;
             for (const auto& [name, value] : fields_of(p))
               if (!value.equal(defaults[name]))  // (a float32 field as it was written: 0.7)
                 shown += (shown.empty() ? "" : ", ") + py::cast<std::string>(name) + "=" +
                          py::cast<std::string>(py::isinstance<py::float_>(value)
                                                    ? py::str("{:.7g}").format(value)
                                                    : py::repr(value));
             return "SamplingParams(" + shown + ")";
           })
      .def("__eq__",
           [](const SamplingParams& a, const py::object& b) {
             return py::isinstance<SamplingParams>(b) &&
                    fields_of(a).equal(fields_of(b.cast<SamplingParams>()));
           })
      .def(py::pickle([](const SamplingParams& p) { return fields_of(p); },
                      [](const py::dict& fields) {
                        return params_from(py::reinterpret_borrow<py::kwargs>(fields));
                      }))
      .def_property("temperature", read_field(&SamplingParams::temperature),
                    write_field(&SamplingParams::temperature, "temperature"),
                    "0 (the default): greedy; else softmax(logits / temperature) is sampled")
      .def_property("top_k", read_field(&SamplingParams::top_k),
                    write_field(&SamplingParams::top_k, "top_k"),
                    "Sample among the k likeliest tokens (0: off)")
      .def_property("top_p", read_field(&SamplingParams::top_p),
                    write_field(&SamplingParams::top_p, "top_p"),
                    "Sample among the likeliest tokens whose probabilities reach p (1: off)")
      .def_property("min_p", read_field(&SamplingParams::min_p),
                    write_field(&SamplingParams::min_p, "min_p"),
                    "Drop tokens less likely than min_p times the likeliest (0: off)")
      .def_property("repetition_penalty", read_field(&SamplingParams::repetition_penalty),
                    write_field(&SamplingParams::repetition_penalty, "repetition_penalty"),
                    "HF's: a token already seen has its logit divided by it (when > 0) or "
                    "multiplied (1: off)")
      .def_property("presence_penalty", read_field(&SamplingParams::presence_penalty),
                    write_field(&SamplingParams::presence_penalty, "presence_penalty"),
                    "OpenAI's, in [-2, 2]: subtracted once from the logit of each token generated")
      .def_property("frequency_penalty", read_field(&SamplingParams::frequency_penalty),
                    write_field(&SamplingParams::frequency_penalty, "frequency_penalty"),
                    "OpenAI's, in [-2, 2]: subtracted per time a token was generated")
      // (an unsigned 64-bit field: a value outside it is a ValueError saying so, not pybind's
      // TypeError about argument types)
      .def_property(
          "seed",
          [](const SamplingParams& p) -> py::object {
            return p.seed ? py::object(py::int_(*p.seed)) : py::none();
          },
          [](SamplingParams& p, const py::object& v) {
            if (v.is_none()) {
              p.seed.reset();
              return;
            }
            if (!is_token_id(v))  // (a bool or a float: TypeError, as for other fields)
              throw py::type_error("seed must be None or an integer, got " + shown(v));
            const unsigned long long x = PyLong_AsUnsignedLongLong(py::int_(v).ptr());
            if (x == -1ULL && PyErr_Occurred() != nullptr) {
              PyErr_Clear();
              throw py::value_error("seed must be an integer in [0, 2**64 - 1], got " +
                                    py::cast<std::string>(py::str(v)));
            }
            p.seed = x;
          },
          "The sampling seed: the same seed, the same tokens. None (the default): each prompt "
          "that samples draws its own when it is queued, so calls sample afresh and equal "
          "prompts sample apart; the output's seed says which, to sample it again")
      .def_property("num_beams", read_field(&SamplingParams::num_beams),
                    write_field(&SamplingParams::num_beams, "num_beams"),
                    "Beam search with this many beams (1: off; deterministic, no sampling)")
      .def_property("length_penalty", read_field(&SamplingParams::length_penalty),
                    write_field(&SamplingParams::length_penalty, "length_penalty"),
                    "Beam search: scores are sum(logprob) / length ** length_penalty")
      .def_property("num_return_sequences", read_field(&SamplingParams::num_return_sequences),
                    write_field(&SamplingParams::num_return_sequences, "num_return_sequences"),
                    "Beam search: hypotheses returned in output.sequences (<= num_beams)")
      .def_property("max_new_tokens", read_field(&SamplingParams::max_new_tokens),
                    write_field(&SamplingParams::max_new_tokens, "max_new_tokens"),
                    "Tokens to generate at most (default 128)")
      .def_property("ignore_eos", read_field(&SamplingParams::ignore_eos),
                    write_field(&SamplingParams::ignore_eos, "ignore_eos"),
                    "Go on past EOS until max_new_tokens or a stop string")
      .def_property("eos_token_ids", read_field(&SamplingParams::eos_token_ids),
                    write_field(&SamplingParams::eos_token_ids, "eos_token_ids"),
                    "Ids that end a text (empty: the model's own)")
      // A list of strings, or one string (as the OpenAI API takes it).
      .def_property(
          "stop", [](const SamplingParams& p) { return p.stop; },
          [](SamplingParams& p, const py::object& v) {
            if (py::isinstance<py::str>(v)) {
              p.stop = {utf8_of(v, "a stop string")};
              return;
            }
            if (!py::isinstance<py::iterable>(v))
              throw py::type_error("stop must be a str or a list of str, got " + shown(v));
            std::vector<std::string> stop;
            for (const py::handle s : v) {
              if (!py::isinstance<py::str>(s))
                throw py::type_error("stop: a stop string must be a str, got " + shown(s));
              stop.push_back(utf8_of(s, "a stop string"));
            }
            p.stop = std::move(stop);
          },
          "Strings that end the text (not included in it); a str or a list")
      .def_property("suppress_tokens", read_field(&SamplingParams::suppress_tokens),
                    write_field(&SamplingParams::suppress_tokens, "suppress_tokens"),
                    "Ids never generated")
      // [(id, bias)], or a dict {id: bias} as the OpenAI API sends it; read back as pairs.
      .def_property(
          "logit_bias", [](const SamplingParams& p) { return p.logit_bias; },
          [](SamplingParams& p, const py::object& v) {
            std::vector<std::pair<int32_t, float>> bias;
            if (!py::isinstance<py::dict>(v)) {
              if (py::isinstance<py::str>(v) || !py::isinstance<py::iterable>(v))
                throw py::type_error("logit_bias: [(id, bias)] or {id: bias}");
              for (const py::handle pair : v) {
                if (!py::isinstance<py::sequence>(pair) || py::isinstance<py::str>(pair) ||
                    py::len(pair) != 2)
                  throw py::type_error("logit_bias: [(id, bias)] or {id: bias}, got an item " +
                                       py::cast<std::string>(py::repr(pair)));
                const auto t = py::reinterpret_borrow<py::sequence>(pair);
                bias.emplace_back(strict<int32_t>(t[0], "logit_bias: a token id"),
                                  strict<float>(t[1], "logit_bias: a bias"));
              }
              p.logit_bias = std::move(bias);
              return;
            }
            for (const auto& [id, b] : py::reinterpret_borrow<py::dict>(v)) {
              // An id, or its digits as the OpenAI API sends them ("5"); not 5.7 or True.
              py::object number;
              if (is_token_id(id) || py::isinstance<py::str>(id)) {
                try {
                  number = py::int_(py::reinterpret_borrow<py::object>(id));
                } catch (py::error_already_set&) {
                  number = py::object();
                }
              }
              if (!number)
                throw py::type_error("logit_bias: keys are token ids, got " +
                                     py::cast<std::string>(py::repr(id)));
              bias.emplace_back(strict<int32_t>(number, "logit_bias: a token id"),
                                strict<float>(b, "logit_bias: a bias"));
            }
            p.logit_bias = std::move(bias);
          },
          "[(id, bias)] or {id: bias}, bias in [-100, 100], added to the logit before "
          "temperature")
      .def_property("logprobs", read_field(&SamplingParams::logprobs),
                    write_field(&SamplingParams::logprobs, "logprobs"),
                    "N >= 0: each generated token's logprob and the N (<= 20) likeliest; -1: off")
      .def_property(
          "prompt_logprobs", read_field(&SamplingParams::prompt_logprobs),
          write_field(&SamplingParams::prompt_logprobs, "prompt_logprobs"),
          "N >= 0: each prompt token's logprob (after the first) and the N likeliest; -1: off")
      // HF's values: False, True or "never".
      .def_property(
          "early_stopping",
          [](const SamplingParams& p) -> py::object {
            if (p.early_stopping == EarlyStopping::kNever) return py::str("never");
            return py::bool_(p.early_stopping == EarlyStopping::kWhenFull);
          },
          [](SamplingParams& p, const py::object& v) {
            if (py::isinstance<py::bool_>(v))
              p.early_stopping =
                  py::cast<bool>(v) ? EarlyStopping::kWhenFull : EarlyStopping::kHeuristic;
            else if (py::isinstance<py::str>(v) && py::cast<std::string>(v) == "never")
              p.early_stopping = EarlyStopping::kNever;
            else
              throw py::value_error("early_stopping: True, False or \"never\"");
          },
          "Beam search's stop rule, as HF's: False (the default), True or \"never\"")
      .def("validate", &SamplingParams::validate, "Raises Error for values that make no sense");

  // Outputs compare equal by value, and are copied and pickled as their fields (a worker's
  // results sent back through multiprocessing).
  py::class_<TokenLogprobs> tl(m, "TokenLogprobs",
                               "A token's log-probability and the likeliest tokens at its step");
  tl.attr("__hash__") = py::none();
  tl.def_readonly("logprob", &TokenLogprobs::logprob, "log p(token) under the model")
      .def_readonly("top", &TokenLogprobs::top, "[(id, logprob)], likeliest first")
      .def("__eq__",
           [](const TokenLogprobs& a, const py::object& b) {
             return py::isinstance<TokenLogprobs>(b) && a == b.cast<const TokenLogprobs&>();
           })
      .def(py::pickle([](const TokenLogprobs& t) { return py::make_tuple(t.logprob, t.top); },
                      [](const py::tuple& state) {
                        if (state.size() != 2) throw py::value_error("TokenLogprobs: bad state");
                        return TokenLogprobs{state[0].cast<float>(),
                                             state[1].cast<decltype(TokenLogprobs::top)>()};
                      }))
      .def("__repr__", [](const TokenLogprobs& t) {
        return "TokenLogprobs(logprob=" + std::to_string(t.logprob) + ", " +
               std::to_string(t.top.size()) + " alternatives)";
      });

  py::class_<GenerationOutput> go(m, "GenerationOutput", "What generate() returns for a prompt");
  go.attr("__hash__") = py::none();
  go.def_readonly("token_ids", &GenerationOutput::token_ids,
                  "The generated ids (not the prompt's); an EOS that ended it is the last")
      .def_readonly("text", &GenerationOutput::text, "Their text, special tokens skipped")
      .def_readonly("finish_reason", &GenerationOutput::finish_reason,
                    "'eos', 'length', 'stop' (a stop string), 'cancelled' (a stream closed "
                    "before its end) or 'error' (a stream whose step raised)")
      .def_readonly("sequences", &GenerationOutput::sequences,
                    "Beam search: the num_return_sequences best hypotheses, best first")
      .def_readonly("scores", &GenerationOutput::scores,
                    "Beam search: their length-penalised scores")
      .def_readonly("reused_prompt_tokens", &GenerationOutput::reused_prompt_tokens,
                    "Leading prompt tokens taken from the KV cache instead of computed")
      .def_readonly("logprobs", &GenerationOutput::logprobs,
                    "With logprobs >= 0: a TokenLogprobs per generated token")
      .def_readonly("prompt_logprobs", &GenerationOutput::prompt_logprobs,
                    "With prompt_logprobs >= 0: a TokenLogprobs per prompt token after the first")
      .def_readonly("seed", &GenerationOutput::seed,
                    "The seed it sampled with (params.seed, or the one drawn for it): give it "
                    "again for the same tokens; None for an unseeded greedy prompt")
      .def("__eq__",
           [](const GenerationOutput& a, const py::object& b) {
             return py::isinstance<GenerationOutput>(b) && a == b.cast<const GenerationOutput&>();
           })
      .def(py::pickle(
          [](const GenerationOutput& o) {
            return py::make_tuple(o.token_ids, py::bytes(o.text), o.finish_reason, o.sequences,
                                  o.scores, o.reused_prompt_tokens, o.logprobs, o.prompt_logprobs,
                                  o.seed);
          },
          [](const py::tuple& state) {
            if (state.size() != 9) throw py::value_error("GenerationOutput: bad state");
            GenerationOutput o;
            o.token_ids = state[0].cast<std::vector<int32_t>>();
            o.text = state[1].cast<std::string>();
            o.finish_reason = state[2].cast<std::string>();
            o.sequences = state[3].cast<std::vector<std::vector<int32_t>>>();
            o.scores = state[4].cast<std::vector<float>>();
            o.reused_prompt_tokens = state[5].cast<int>();
            o.logprobs = state[6].cast<std::vector<TokenLogprobs>>();
            o.prompt_logprobs = state[7].cast<std::vector<TokenLogprobs>>();
            o.seed = state[8].cast<std::optional<uint64_t>>();
            return o;
          }))
      .def("__repr__", [](const GenerationOutput& o) {
        return "GenerationOutput(" + std::to_string(o.token_ids.size()) +
               " tokens, finish_reason='" + o.finish_reason +
               "', text=" + py::cast<std::string>(py::repr(py::str(o.text))) + ")";
      });

  py::class_<Tokenizer>(m, "Tokenizer",
                        "A model's tokenizer (HF tokenizer.json or a GGUF's): encode, decode, chat "
                        "templates; Engine.tokenizer or load_tokenizer(path)")
      .def(
          "encode",
          [](const Tokenizer& t, const py::object& text, const py::object& add_special_tokens,
             const py::kwargs& kw) {
            refuse_the_rest("encode", kw, "text and add_special_tokens");
            return t.encode(argument<std::string>(text, "text"),
                            argument<bool>(add_special_tokens, "add_special_tokens"));
          },
          py::arg("text"), py::arg("add_special_tokens") = py::bool_(true),
          "Token ids of a text (with the model's BOS etc. unless add_special_tokens=False)")
      .def(
          "decode",
          [](const Tokenizer& t, const py::object& given, const py::object& skip,
             const py::kwargs& kw) {
            const py::object ids = theirs_or(given, kw, "ids", "token_ids");
            refuse_the_rest("decode", kw, "ids or token_ids, and skip_special_tokens");
            if (ids.is_none()) throw py::type_error("decode() needs the ids");
            return t.decode(argument<std::vector<int32_t>>(ids, "ids"),
                            argument<bool>(skip, "skip_special_tokens"));
          },
          py::arg("ids") = py::none(), py::arg("skip_special_tokens") = py::bool_(false),
          "The text of token ids")
      .def(
          "batch_decode",
          [](const Tokenizer& t, const py::object& sequences, const py::object& skip) {
            const py::object rows = as_lists(sequences);  // (a 2-D numpy array: a text a row)
            if (py::isinstance<py::str>(rows) || !py::isinstance<py::iterable>(rows))
              throw py::type_error("sequences must be a list of lists of token ids, got " +
                                   shown(sequences));
            const bool skip_special = argument<bool>(skip, "skip_special_tokens");
            std::vector<std::string> texts;
            for (const py::handle ids : rows)
              texts.push_back(
                  t.decode(argument<std::vector<int32_t>>(ids, "sequences"), skip_special));
            return texts;
          },
          py::arg("sequences"), py::arg("skip_special_tokens") = py::bool_(false),
          "The text of each list of token ids (HF's batch_decode)")
      .def("__len__", &Tokenizer::vocab_size,
           "The ids it knows, special ones included (HF's len(tokenizer))")
      .def(
          "apply_chat_template",
          [](const Tokenizer& t, const py::object& messages, const py::object& add_prompt,
             const py::object& go_on, const py::object& date, const py::object& tokenize,
             const py::kwargs& kw) -> py::object {
            const py::object conversation = theirs_or(messages, kw, "messages", "conversation");
            refuse_the_rest("apply_chat_template", kw,
                            "messages or conversation, add_generation_prompt, "
                            "continue_final_message, date_string and tokenize; tools and "
                            "documents are not rendered");
            if (conversation.is_none())
              throw py::type_error("apply_chat_template() needs the messages");
            const bool cont = argument<bool>(go_on, "continue_final_message");
            const std::string text = t.apply_chat_template(
                messages_from(conversation),
                add_prompt.is_none() ? !cont : argument<bool>(add_prompt, "add_generation_prompt"),
                cont,
                date.is_none() ? std::nullopt
                               : std::optional(argument<std::string>(date, "date_string")));
            // (the template wrote the special tokens the text needs, so none are added)
            if (argument<bool>(tokenize, "tokenize")) return py::cast(t.encode(text, false));
            return py::str(text);
          },
          py::arg("messages") = py::none(), py::arg("add_generation_prompt") = py::none(),
          py::arg("continue_final_message") = py::bool_(false), py::kw_only(),
          py::arg("date_string") = py::none(), py::arg("tokenize") = py::bool_(false),
          "The prompt text of chat messages [{\"role\", \"content\"}] by the model's template: "
          "with the header that begins a reply (add_generation_prompt, default True), or with the "
          "final message left open for the model to go on with (continue_final_message). "
          "date_string: the date the Llama-3.1 and 3.2 templates write into their system turn "
          "(theirs by default: 26 Jul 2024, and today's date). tokenize=True: its token ids "
          "instead (HF's tokenize=True, return_dict=False)")
      .def_property_readonly("vocab_size", &Tokenizer::vocab_size, "Ids the tokenizer knows")
      .def_property_readonly("bos_id", &Tokenizer::bos_id, "The BOS id (-1: none)")
      .def_property_readonly("eos_ids", &Tokenizer::eos_ids, "The ids that end a text");
  m.def(
      "load_tokenizer",
      [](const py::object& path) {
        const std::string p = path_of(path, "path");
        return load_tokenizer_for_model(resolve_model_path(p));
      },
      py::arg("path"),
      "The tokenizer of a .gguf file, a HF model directory, a tokenizer.json or \"default\"");

  py::class_<Stream>(m, "Stream", "Text pieces of one request; .output once it has ended")
      .def("__iter__", [](Stream& s) -> Stream& { return s; })
      .def("__next__", &Stream::next)
      .def("close", &Stream::close, "Ends the request (finish_reason 'cancelled')")
      .def_property_readonly("output", &Stream::output,
                             "The GenerationOutput once the stream has ended, else None")
      .def_property_readonly("token_ids", &Stream::token_ids, "The ids generated so far");

  py::class_<PyEngine, std::shared_ptr<PyEngine>>(
      m, "Engine",
      "A model loaded on a backend: generate() for a batch of prompts, stream() for one; "
      "Engine(model, backend='cpu', ...), model a HF directory, a .gguf or 'default'")
      .def(
          py::init([](const py::object& model, const py::kwargs& kw) {
            EngineOptions o = engine_options(kw);
            o.model = path_of(model, "model");
            // Options only the CUDA backend reads say so elsewhere (as the CLI's flags do).
            std::string named;
            if (o.backend != "cuda")
              for (const char* key : {"dtype", "cuda_graphs", "keep_blocks", "warmup"})
                if (kw.contains(key)) named.append(named.empty() ? "" : ", ").append(key);
            if (!named.empty() &&
                PyErr_WarnEx(
                    PyExc_UserWarning,
                    (named + ": CUDA backend only, ignored on backend '" + o.backend + "'").c_str(),
                    1) != 0)
              throw py::error_already_set();
            if (o.backend != "cuda") {  // (ignored: a value the CUDA backend refuses too)
              const EngineOptions d;
              o.dtype = d.dtype;
              o.cuda_graphs = d.cuda_graphs;
              o.keep_blocks = d.keep_blocks;
              o.warmup = d.warmup;
            }
            if (forked_from_threads() &&
                PyErr_WarnEx(PyExc_RuntimeWarning,
                             "this process was forked from one that ran a nanoinfer Engine: "
                             "OpenMP's threads do not survive a fork, so this thread's engine "
                             "work runs on one core (multiprocessing's 'spawn' or 'forkserver' "
                             "start method keeps them all)",
                             1) != 0)
              throw py::error_already_set();  // (warnings made errors)
            const py::gil_scoped_release nogil;
            check_positions(o, {{"max_context", o.max_context}});  // (as the CLI)
            return std::make_shared<PyEngine>(o);
          }),
          py::arg("model"), engine_doc().c_str())
      .def("generate", &generate, py::arg("prompts"), py::arg("params") = py::none(), py::kw_only(),
           py::arg("chat") = py::bool_(false), py::arg("date_string") = py::none(),
           "One GenerationOutput per prompt (a str, a list of token ids or a list of chat "
           "messages: a final assistant message is continued; numpy arrays of ids too), all in "
           "one batch; sampling parameters as `params` (a SamplingParams or one per prompt; "
           "vLLM's sampling_params), or as keywords; date_string as in "
           "Tokenizer.apply_chat_template")
      .def(
          "stream",
          [](const std::shared_ptr<PyEngine>& pe, const py::object& prompt,
             const py::object& params_given, const py::object& chat_flag, const py::object& date,
             const py::kwargs& kw) {
            const ChatOptions chat(chat_flag, date);
            const py::object params = theirs_or(params_given, kw, "params", "sampling_params");
            chat.check_date_used(py::list(py::make_tuple(prompt)));
            GenerationRequest r{prompt_ids(pe->engine, prompt, chat), params_for(1, params, kw)[0]};
            fit_unset_length(pe->engine, params, kw, r);
            return std::make_unique<Stream>(pe, r);
          },
          py::arg("prompt"), py::arg("params") = py::none(), py::kw_only(),
          py::arg("chat") = py::bool_(false), py::arg("date_string") = py::none(),
          "A Stream of one prompt's text as it is generated")
      .def_property_readonly(
          "tokenizer", [](const PyEngine& pe) { return pe.engine.tokenizer(); },
          py::return_value_policy::reference_internal, "The model's Tokenizer (None: it has none)")
      .def_property_readonly(
          "config", [](const PyEngine& pe) { return config_dict(pe.engine.config()); },
          "The model's shape: a dict (vocab_size, hidden_size, num_layers, ..., parameters)")
      .def_property_readonly(
          "last_stats",
          [](PyEngine& pe) {
            // (not while another thread's call writes them)
            return stats_dict(locked(pe, [&] { return pe.engine.last_stats(); }));
          },
          "Timings and token counts of the last generate()")
      .def_property_readonly(
          "load_seconds", [](const PyEngine& pe) { return pe.engine.load_seconds(); },
          "Seconds the load took, the warm-up included")
      .def_property_readonly(
          "weight_bytes", [](const PyEngine& pe) { return pe.engine.weight_bytes(); },
          "Bytes the weights take on the backend")
      .def(
          "profile_report",
          [](PyEngine& pe) {
            if (!pe.profile)
              throw Error("profile_report: this Engine was made without profile=True");
            return locked(pe, [&] { return pe.engine.profile_report(); });
          },
          "Time per op kind, prefill and decode apart (an Engine made with profile=True)")
      .def(
          "release_cache",
          [](PyEngine& pe) {
            locked(pe, [&] {
              settle(pe);
              pe.engine.release_cache();
            });
          },
          "Gives back the KV cache kept between calls (the next call allocates it again)");
}
