/* ----------------------------------------------------------------------
   mdpot: the model runner (mdpot_model.h). The only file of the plugin that includes torch.
------------------------------------------------------------------------- */

#include "mdpot_model.h"

#include "mdpot_contract.h"    // generated from mdpot/contract.py at build time

#include <ATen/Parallel.h>
#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/cuda.h>
#include <torch/script.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <mutex>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include <dlfcn.h>
#include <sys/utsname.h>
#include <unistd.h>

namespace mdpot {

namespace {

std::string join(const std::vector<std::string> &words, const char *sep)
{
  std::string out;
  for (size_t k = 0; k < words.size(); ++k) out += (k ? sep : "") + words[k];
  return out;
}

// One line of a torch exception: c10's C++ backtrace dropped, and of a TorchScript interpreter trace
// only its first and last lines (the last one is the error itself).
std::string one_line(const std::exception &e)
{
  const auto *c10err = dynamic_cast<const c10::Error *>(&e);
  const std::string text = c10err ? c10err->what_without_backtrace() : e.what();
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    const auto b = line.find_first_not_of(" \t\r");
    if (b != std::string::npos) lines.push_back(line.substr(b, line.find_last_not_of(" \t\r") - b + 1));
  }
  if (lines.empty()) return "unknown error";
  if (lines.size() == 1) return lines[0];
  return lines.front() + " ... " + lines.back();
}

std::string shape_str(const torch::Tensor &t)
{
  std::vector<std::string> dims;
  for (auto s : t.sizes()) dims.push_back(std::to_string(s));
  return "[" + join(dims, ", ") + "]";
}

// What Python prints for str(tensor.dtype), which weights_digest hashes.
std::string python_dtype(c10::ScalarType t)
{
  switch (t) {
    case c10::ScalarType::Float: return "torch.float32";
    case c10::ScalarType::Double: return "torch.float64";
    case c10::ScalarType::Half: return "torch.float16";
    case c10::ScalarType::BFloat16: return "torch.bfloat16";
    case c10::ScalarType::ComplexFloat: return "torch.complex64";
    case c10::ScalarType::ComplexDouble: return "torch.complex128";
    case c10::ScalarType::Long: return "torch.int64";
    case c10::ScalarType::Int: return "torch.int32";
    case c10::ScalarType::Short: return "torch.int16";
    case c10::ScalarType::Char: return "torch.int8";
    case c10::ScalarType::Byte: return "torch.uint8";
    case c10::ScalarType::Bool: return "torch.bool";
    default: throw Error(std::string("weights of unsupported dtype ") + c10::toString(t));
  }
}

// What Python prints for str(tuple(tensor.shape)): "()", "(5,)", "(32, 16)".
std::string python_shape(const torch::Tensor &t)
{
  std::vector<std::string> dims;
  for (auto s : t.sizes()) dims.push_back(std::to_string(s));
  if (dims.size() == 1) return "(" + dims[0] + ",)";
  return "(" + join(dims, ", ") + ")";
}

// mdpot.deploy.weights_digest: SHA-256 over the state dict sorted by name; per tensor its name, dtype,
// shape and raw (little-endian, contiguous) bytes.
std::string weights_digest(const torch::jit::Module &module)
{
  std::map<std::string, torch::Tensor> state;
  for (const auto &p : module.named_parameters(true)) state[p.name] = p.value;
  for (const auto &b : module.named_buffers(true)) state[b.name] = b.value;
  Sha256 h;
  for (const auto &[name, tensor] : state) {
    const torch::Tensor t = tensor.detach().to(torch::kCPU).contiguous();
    h.update(name);
    h.update(python_dtype(t.scalar_type()));
    h.update(python_shape(t));
    h.update(t.data_ptr(), t.nbytes());
  }
  return h.hexdigest();
}

bool one_of(const std::string &value, const char *const *list, int n)
{
  for (int k = 0; k < n; ++k)
    if (value == list[k]) return true;
  return false;
}

std::string quoted_list(const char *const *list, int n)
{
  std::vector<std::string> items;
  for (int k = 0; k < n; ++k) items.push_back(std::string("'") + list[k] + "'");
  return join(items, ", ");
}

// The value of a string of ASCII digits, saturated at 10^12 (Python's int() has no limit).
long long digits_value(const std::string &digits)
{
  long long v = 0;
  for (char c : digits) v = std::min(v * 10 + (c - '0'), 1000000000000LL);
  return v;
}

bool full_match(const std::string &text, const char *pattern)
{
  return std::regex_match(text, std::regex(pattern, std::regex::ECMAScript));
}

// Chemical symbols are separated by ASCII whitespace, as decode() splits them.
std::vector<std::string> split_ascii_whitespace(const std::string &s)
{
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

// Whether `version` is one of an AOTInductor package (3; 6 calling the fused kernels).
bool package_version(int version)
{
  return version == contract::AOTI_FORMAT_VERSION || version == contract::AOTI_FUSED_FORMAT_VERSION;
}

// The versions of files calling the fused operators: TorchScript files (`package` false), or packages.
std::vector<std::string> fused_versions(bool package)
{
  if (package) return {std::to_string(contract::AOTI_FUSED_FORMAT_VERSION)};
  std::vector<std::string> out;
  for (int k = 0; k < contract::TORCHSCRIPT_FUSED_FORMAT_VERSIONS_COUNT; ++k)
    out.push_back(std::to_string(contract::TORCHSCRIPT_FUSED_FORMAT_VERSIONS[k]));
  return out;
}

bool fused_version(int version, bool package)
{
  for (const std::string &v : fused_versions(package))
    if (v == std::to_string(version)) return true;
  return false;
}

// The readable versions a TorchScript file may have (`package` false), or a package.
std::vector<std::string> readable_versions(bool package)
{
  std::vector<std::string> out;
  for (int k = 0; k < contract::READABLE_FORMAT_VERSIONS_COUNT; ++k)
    if (package_version(contract::READABLE_FORMAT_VERSIONS[k]) == package)
      out.push_back(std::to_string(contract::READABLE_FORMAT_VERSIONS[k]));
  return out;
}

// The format version of the integer `version`, or an Error naming the versions this build reads. The loader also
// calls it before torch reads a file's code: code of an unknown version may call operators this process lacks.
int readable_version(const std::string &version, const std::string &path)
{
  namespace c = contract;
  for (int k = 0; k < c::READABLE_FORMAT_VERSIONS_COUNT; ++k)
    if (digits_value(version) == c::READABLE_FORMAT_VERSIONS[k]) return c::READABLE_FORMAT_VERSIONS[k];
  throw Error("'" + path + "' has " + c::KEY_FORMAT_VERSION + " '" + version + "', this build reads versions " +
              join(readable_versions(false), ", ") + " of TorchScript files and " +
              join(readable_versions(true), ", ") + " of AOTInductor packages (use a plugin built from a matching "
              "mdpot)");
}

// Whether `text` (already checked by is_json) is a JSON list of `count` objects.
bool json_list_of_objects(const std::string &text, long long count)
{
  size_t i = text.find_first_not_of(" \t\n\r");
  if (i == std::string::npos || text[i] != '[') return false;
  long long objects = 0;
  int depth = 0;
  bool in_string = false, expect_value = true;
  for (; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') continue;
    if (depth == 1 && expect_value && c != ']') {    // an element of the top-level list starts here
      if (c != '{') return false;
      ++objects;
      expect_value = false;
    }
    if (c == '"') in_string = true;
    else if (c == '[' || c == '{') ++depth;
    else if (c == ']' || c == '}') --depth;
    else if (c == ',' && depth == 1) expect_value = true;
  }
  return objects == count;
}

// The rules of mdpot.deploy.metadata.decode, in the same order (docs/contract.md, "Metadata"). A package
// (`package`) is version AOTI_FORMAT_VERSION or AOTI_FUSED_FORMAT_VERSION, which no TorchScript file is.
Metadata decode(std::map<std::string, std::string> raw, const std::string &path, bool package)
{
  namespace c = contract;
  std::vector<std::string> missing;
  for (int k = 0; k < c::ALL_KEYS_COUNT; ++k)
    if (raw[c::ALL_KEYS[k]].empty()) missing.emplace_back(c::ALL_KEYS[k]);
  if (!missing.empty())
    throw Error("'" + path + "' is not an mdpot model: missing metadata keys: " + join(missing, ", "));

  Metadata m;
  const std::string &version = raw[c::KEY_FORMAT_VERSION];
  if (!full_match(version, c::INTEGER_PATTERN))
    throw Error("'" + path + "': " + c::KEY_FORMAT_VERSION + " must be an integer, got '" + version + "'");
  m.format_version = readable_version(version, path);
  if (package && !package_version(m.format_version))
    throw Error("'" + path + "' is an AOTInductor package with " + c::KEY_FORMAT_VERSION + " '" + version +
                "'; packages are version " + join(readable_versions(true), " or "));
  if (!package && package_version(m.format_version))
    throw Error("'" + path + "' is a TorchScript file with " + c::KEY_FORMAT_VERSION + " '" + version +
                "', a version of AOTInductor packages; TorchScript files are version " +
                join(readable_versions(false), " or "));

  m.architecture = raw[c::KEY_ARCHITECTURE];
  if (!one_of(m.architecture, c::ARCHITECTURE_NAMES, c::ARCHITECTURE_NAMES_COUNT))
    throw Error("'" + path + "': unknown architecture '" + m.architecture + "'; expected one of " +
                quoted_list(c::ARCHITECTURE_NAMES, c::ARCHITECTURE_NAMES_COUNT));
  m.model_dtype = raw[c::KEY_MODEL_DTYPE];
  if (!one_of(m.model_dtype, c::DTYPES, c::DTYPES_COUNT))
    throw Error("'" + path + "': model_dtype '" + m.model_dtype + "' is not one of " +
                quoted_list(c::DTYPES, c::DTYPES_COUNT));
  m.energy_units = raw[c::KEY_ENERGY_UNITS];
  m.length_units = raw[c::KEY_LENGTH_UNITS];
  if (m.energy_units != c::ENERGY_UNIT || m.length_units != c::LENGTH_UNIT)
    throw Error("'" + path + "': units " + m.energy_units + "/" + m.length_units + " are not supported (expected " +
                c::ENERGY_UNIT + "/" + c::LENGTH_UNIT + ")");

  m.elements = split_ascii_whitespace(raw[c::KEY_ELEMENTS]);
  std::vector<std::string> sorted = m.elements;
  std::sort(sorted.begin(), sorted.end());
  if (m.elements.empty() || std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end())
    throw Error("'" + path + "': metadata elements must name distinct elements, got '" + raw[c::KEY_ELEMENTS] + "'");

  auto real = [&](const char *key) {
    const std::string &text = raw[key];
    if (!full_match(text, c::FLOAT_PATTERN))
      throw Error("'" + path + "': metadata " + key + " must be a float, got '" + text + "'");
    return std::strtod(text.c_str(), nullptr);    // correctly rounded, as Python's float()
  };
  m.r_max = real(c::KEY_R_MAX);
  m.receptive_field = real(c::KEY_RECEPTIVE_FIELD);
  const std::string &layers = raw[c::KEY_NUM_LAYERS];
  if (!full_match(layers, c::INTEGER_PATTERN) || digits_value(layers) < 1 || digits_value(layers) > c::MAX_NUM_LAYERS)
    throw Error("'" + path + "': metadata num_layers must be an integer from 1 to " +
                std::to_string(c::MAX_NUM_LAYERS) + ", got '" + layers + "'");
  m.num_layers = static_cast<int>(digits_value(layers));
  if (!std::isfinite(m.r_max) || !(m.r_max > 0) || !std::isfinite(m.receptive_field) ||
      m.receptive_field < m.r_max)
    throw Error("'" + path + "': inconsistent cutoffs r_max=" + raw[c::KEY_R_MAX] +
                " receptive_field=" + raw[c::KEY_RECEPTIVE_FIELD] +
                " (expected finite values with 0 < r_max <= receptive_field)");

  m.provenance = raw[c::KEY_PROVENANCE];
  m.config = raw[c::KEY_CONFIG];
  for (const char *key : {c::KEY_PROVENANCE, c::KEY_CONFIG})
    if (!is_json(raw[key])) throw Error("'" + path + "': metadata " + key + " is not valid JSON");
  m.torch_version = raw[c::KEY_TORCH_VERSION];
  m.mdpot_version = raw[c::KEY_MDPOT_VERSION];
  m.weights_sha256 = raw[c::KEY_WEIGHTS_SHA256];
  // optional (absent: reference); fused exactly in the files of TORCHSCRIPT_FUSED_FORMAT_VERSIONS and
  // AOTI_FUSED_FORMAT_VERSION (packages)
  const std::string kernels = raw[c::KEY_KERNELS];
  if (!kernels.empty()) {
    if (!one_of(kernels, c::KERNELS, c::KERNELS_COUNT))
      throw Error("'" + path + "': metadata " + c::KEY_KERNELS + " '" + kernels + "' is not one of " +
                  quoted_list(c::KERNELS, c::KERNELS_COUNT));
    m.kernels = kernels;
  }
  // a committee file (version 7) holds members with either kernels
  if (m.format_version != c::COMMITTEE_FORMAT_VERSION && (m.kernels == "fused") != fused_version(m.format_version, package))
    throw Error("'" + path + "': metadata " + c::KEY_KERNELS + " '" + m.kernels + "' with " + c::KEY_FORMAT_VERSION +
                " " + std::to_string(m.format_version) + " (" + (package ? "packages" : "files") +
                " calling the fused kernels are version " + join(fused_versions(package), " or ") +
                ", and only they); deploy it again");
  // optional (absent in files deployed before it existed); a present value must be a positive float
  const std::string &per_edge = raw[c::KEY_BYTES_PER_EDGE];
  if (!per_edge.empty()) {
    m.bytes_per_edge = full_match(per_edge, c::FLOAT_PATTERN) ? std::strtod(per_edge.c_str(), nullptr) : -1.0;
    if (!std::isfinite(m.bytes_per_edge) || !(m.bytes_per_edge > 0))
      throw Error("'" + path + "': metadata " + c::KEY_BYTES_PER_EDGE + " must be a positive float, got '" + per_edge +
                  "'");
  }
  // rule 14: the committee keys, present exactly in a version-7 file
  const std::string &size_text = raw[c::KEY_COMMITTEE_SIZE];
  const std::string &members = raw[c::KEY_COMMITTEE_MEMBERS];
  if (m.format_version != c::COMMITTEE_FORMAT_VERSION) {
    if (!size_text.empty() || !members.empty())
      throw Error("'" + path + "': metadata " + (size_text.empty() ? c::KEY_COMMITTEE_MEMBERS : c::KEY_COMMITTEE_SIZE) +
                  " in a file of " + c::KEY_FORMAT_VERSION + " " + std::to_string(m.format_version) +
                  " (committee files are version " + std::to_string(c::COMMITTEE_FORMAT_VERSION) + "); deploy it again");
    return m;
  }
  std::vector<std::string> absent;
  if (size_text.empty()) absent.emplace_back(c::KEY_COMMITTEE_SIZE);
  if (members.empty()) absent.emplace_back(c::KEY_COMMITTEE_MEMBERS);
  if (!absent.empty())
    throw Error("'" + path + "': a committee file (" + c::KEY_FORMAT_VERSION + " " + version +
                ") without metadata " + join(absent, ", ") + "; deploy it again");
  if (!full_match(size_text, c::INTEGER_PATTERN) || digits_value(size_text) < c::MIN_COMMITTEE_SIZE)
    throw Error("'" + path + "': metadata " + c::KEY_COMMITTEE_SIZE + " must be an integer >= " +
                std::to_string(c::MIN_COMMITTEE_SIZE) + ", got '" + size_text + "'");
  if (!is_json(members))
    throw Error("'" + path + "': metadata " + c::KEY_COMMITTEE_MEMBERS + " is not valid JSON");
  if (!json_list_of_objects(members, digits_value(size_text)))
    throw Error("'" + path + "': metadata " + c::KEY_COMMITTEE_MEMBERS + " must be a JSON list of " + size_text +
                " objects (" + c::KEY_COMMITTEE_SIZE + " " + size_text + ")");
  m.committee_size = static_cast<int>(digits_value(size_text));    // < 10^12 list elements were counted
  return m;
}

// The folder of the binary this code is in (the plugin, or mdpot_model_check), where libmdpot_ops.so is installed.
std::string own_folder()
{
  std::string file;
  Dl_info info;
  if (dladdr(reinterpret_cast<void *>(&own_folder), &info) && info.dli_fname) file = info.dli_fname;
  if (file.find('/') == std::string::npos) {    // the main program: its name as started
    char buf[4096];
    const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
    file = n > 0 ? std::string(buf, n) : std::string("./x");
  }
  return file.substr(0, file.rfind('/'));
}

// Registers the fused operators (torch.ops.mdpot.*) before a file that calls them is read: libmdpot_ops.so from
// beside this binary, unless this process has them already (Python loaded them, mdpot.ops.load_ops).
void load_fused_kernels(const std::string &path)
{
  static std::mutex mutex;
  static bool loaded = false;
  std::lock_guard<std::mutex> lock(mutex);
  if (loaded || c10::Dispatcher::singleton().findSchema({"mdpot::tp_scatter", ""}).has_value()) {
    loaded = true;
    return;
  }
  const std::string lib = own_folder() + "/" + contract::OPS_LIBRARY;
  if (!dlopen(lib.c_str(), RTLD_NOW | RTLD_GLOBAL)) {
    const char *why = dlerror();
    throw Error("'" + path + "' calls mdpot's fused kernels (" + contract::KEY_KERNELS + " fused), but " + lib +
                " cannot be loaded (" + (why ? why : "unknown error") + "); rebuild the plugin with `python -m "
                "mdpot.lammps.plugin --force`, or deploy the model with --kernels reference");
  }
  loaded = true;
}

// TorchScript's profiling executor is a process-wide switch; set it for one call, then put it back.
class ExecutorOptimizeGuard {
 public:
  explicit ExecutorOptimizeGuard(bool on) : saved(torch::jit::getGraphExecutorOptimize())
  {
    torch::jit::setGraphExecutorOptimize(on);
  }
  ~ExecutorOptimizeGuard() { torch::jit::setGraphExecutorOptimize(saved); }
  ExecutorOptimizeGuard(const ExecutorOptimizeGuard &) = delete;
  ExecutorOptimizeGuard &operator=(const ExecutorOptimizeGuard &) = delete;

 private:
  bool saved;
};


/* ----------------------------------------------------------------------
   AOTInductor packages (docs/contract.md, "AOTInductor packages")
------------------------------------------------------------------------- */

// A member of a JSON object that the package checks read: a string, a list of strings, or anything else.
struct JsonField {
  enum Kind { String, StringList, Other } kind = Other;
  std::string text;
  std::vector<std::string> list;
};

// Reads the top-level object of a JSON text already checked by is_json(); its string and string-list
// members by name (a name given twice keeps the last value, as Python's json does).
class JsonObjectReader {
 public:
  explicit JsonObjectReader(const std::string &s) : s(s) {}
  bool read(std::map<std::string, JsonField> &out)
  {
    if (!is_json(s)) return false;
    ws();
    if (!at('{')) return false;
    ++i;
    ws();
    if (at('}')) return true;
    while (true) {
      ws();
      std::string key = string();
      ws();
      ++i;    // ':'
      ws();
      out[key] = value();
      ws();
      if (at('}')) return true;
      ++i;    // ','
    }
  }

 private:
  const std::string &s;
  size_t i = 0;
  bool at(char c) const { return i < s.size() && s[i] == c; }
  void ws()
  {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  }
  static void utf8(std::string &out, uint32_t cp)
  {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xc0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xe0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
      out += static_cast<char>(0xf0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    }
  }
  uint32_t hex4()
  {
    const uint32_t v = static_cast<uint32_t>(std::stoul(s.substr(i, 4), nullptr, 16));
    i += 4;
    return v;
  }
  std::string string()
  {
    std::string out;
    ++i;    // opening quote
    while (s[i] != '"') {
      const char c = s[i++];
      if (c != '\\') {
        out += c;
        continue;
      }
      const char e = s[i++];
      switch (e) {
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = hex4();
          if (cp >= 0xd800 && cp < 0xdc00 && s.compare(i, 2, "\\u") == 0) {    // a surrogate pair
            const size_t save = i;
            i += 2;
            const uint32_t low = hex4();
            if (low >= 0xdc00 && low < 0xe000)
              cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
            else
              i = save;
          }
          utf8(out, cp);
          break;
        }
        default: out += e;    // " \ /
      }
    }
    ++i;    // closing quote
    return out;
  }
  void skip()    // one value of any kind
  {
    if (at('"')) {
      string();
    } else if (at('{') || at('[')) {
      int depth = 0;
      do {
        if (at('"')) {
          string();
          continue;
        }
        if (at('{') || at('[')) ++depth;
        if (at('}') || at(']')) --depth;
        ++i;
      } while (depth > 0);
    } else {
      while (i < s.size() && !std::strchr(",}] \t\n\r", s[i])) ++i;
    }
  }
  JsonField value()
  {
    JsonField f;
    if (at('"')) {
      f.kind = JsonField::String;
      f.text = string();
      return f;
    }
    if (at('[')) {
      const size_t start = i;
      ++i;
      ws();
      f.kind = JsonField::StringList;
      while (!at(']')) {
        if (!at('"')) {
          i = start;
          skip();
          return JsonField();
        }
        f.list.push_back(string());
        ws();
        if (at(',')) ++i;
        ws();
      }
      ++i;
      return f;
    }
    skip();
    return f;
  }
};

// What the running machine is: uname's machine and the CPU features of /proc/cpuinfo ("flags" on x86,
// "Features" on ARM; the first processor's line).
std::string this_machine()
{
  struct utsname u;
  return uname(&u) == 0 ? std::string(u.machine) : std::string("unknown");
}

bool cpu_features(std::set<std::string> &features)
{
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    name.erase(name.find_last_not_of(" \t") + 1);
    if (name != "flags" && name != "Features") continue;
    for (const auto &f : split_ascii_whitespace(line.substr(colon + 1))) features.insert(f);
    return true;
  }
  return false;
}

// The package's records (names relative to its top folder), read once.
struct PackageRecords {
  std::map<std::string, std::string> bytes;
};

// weights_sha256 of a package: every record under data/, sorted by name; per record its name, a zero byte,
// its length as 8 bytes little-endian, then its bytes.
std::string package_digest(const PackageRecords &records)
{
  const std::string folder = std::string(contract::AOTI_DIGESTED_FOLDER) + "/";
  Sha256 h;
  for (const auto &[name, data] : records.bytes) {    // std::map: sorted by name
    if (name.compare(0, folder.size(), folder) != 0) continue;
    h.update(name);
    const unsigned char zero = 0;
    h.update(&zero, 1);
    unsigned char len[8];
    for (int k = 0; k < 8; ++k) len[k] = static_cast<unsigned char>(static_cast<uint64_t>(data.size()) >> (8 * k));
    h.update(len, 8);
    h.update(data);
  }
  return h.hexdigest();
}

std::string lower(std::string s)
{
  for (auto &c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The target check, in the Python loader's order (mdpot.deploy.aoti.check_target): the target against the
// compiled program's own *_metadata.json (torch's keys, compared without case), then against the requested
// device, this machine's architecture and, for a CPU package, this CPU's features.
void check_target(const PackageRecords &records, const std::string &target_text, const std::string &path,
                  const torch::Device &device)
{
  std::map<std::string, JsonField> t;
  if (!JsonObjectReader(target_text).read(t) || t["device"].kind != JsonField::String ||
      t["machine"].kind != JsonField::String || t["isa"].kind != JsonField::String ||
      t["arch_flags"].kind != JsonField::StringList)
    throw Error("'" + path + "': metadata " + contract::AOTI_TARGET +
                " must be a JSON object with strings device, machine, isa and a list of strings arch_flags");
  const std::string &tdev = t["device"].text, &tmachine = t["machine"].text, &tisa = t["isa"].text;

  // the program's metadata files: present, JSON objects, all alike, naming device, machine and ISA
  const std::string folder = std::string(contract::AOTI_DIGESTED_FOLDER) + "/aotinductor/" + contract::AOTI_PROGRAM + "/";
  const std::string suffix = "_metadata.json";
  std::map<std::string, JsonField> program;
  bool found = false;
  for (const auto &[name, data] : records.bytes) {
    if (name.compare(0, folder.size(), folder) != 0 || name.size() < suffix.size() ||
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
      continue;
    std::map<std::string, JsonField> m;
    if (!JsonObjectReader(data).read(m)) throw Error("'" + path + "': " + name + " is not a JSON object; deploy it again");
    if (found) {
      bool same = m.size() == program.size();
      for (const auto &[k, v] : m)
        same = same && program.count(k) && program[k].kind == v.kind && program[k].text == v.text && program[k].list == v.list;
      if (!same) throw Error("'" + path + "': the compiled program's metadata files disagree; deploy it again");
    }
    program = m;
    found = true;
  }
  static const char *const keys[3][2] = {{"device", "AOTI_DEVICE_KEY"}, {"machine", "AOTI_MACHINE"}, {"isa", "AOTI_CPU_ISA"}};
  for (const auto &k : keys)
    if (!found || program[k[1]].kind != JsonField::String)
      throw Error("'" + path + "': the compiled program has no metadata naming its device, machine and CPU ISA (" +
                  folder + "*" + suffix + "); deploy it again");
  for (const auto &k : keys)
    if (lower(t[k[0]].text) != lower(program[k[1]].text))
      throw Error("'" + path + "': metadata " + contract::AOTI_TARGET + " says " + k[0] + " '" + t[k[0]].text +
                  "', the compiled program says '" + program[k[1]].text + "': the package was modified after `mdpot deploy`");

  const std::string again = "deploy it again on this machine, or deploy with --format torchscript";
  const std::string wanted = device.is_cuda() ? "cuda" : device.is_cpu() ? "cpu" : c10::DeviceTypeName(device.type(), true);
  if (tdev != wanted)
    throw Error("'" + path + "' is compiled for device " + tdev + " and cannot run on " + device.str() + "; " + again);
  const std::string machine = this_machine();
  if (tmachine != machine)
    throw Error("'" + path + "' is compiled for " + tmachine + " machines, this one is " + machine + "; " + again);
  if (tdev != "cpu") return;
  std::vector<std::string> unknown;
  for (const auto &flag : t["arch_flags"].list)
    if (!one_of(flag, contract::AOTI_ARCH_FLAGS, contract::AOTI_ARCH_FLAGS_COUNT)) unknown.push_back(flag);
  if (!unknown.empty())
    throw Error("'" + path + "' is compiled with instruction-set flag(s) " + join(unknown, " ") +
                " that this mdpot does not know; " + again);
  std::set<std::string> have;
  cpu_features(have);
  std::vector<std::string> lacking;
  for (const auto &flag : t["arch_flags"].list) {
    int k = 0;
    while (flag != contract::AOTI_ARCH_FLAGS[k]) ++k;
    for (const auto &feature : split_ascii_whitespace(contract::AOTI_ARCH_FLAG_FEATURES[k]))
      if (!have.count(feature) && std::find(lacking.begin(), lacking.end(), feature) == lacking.end())
        lacking.push_back(feature);
  }
  if (!lacking.empty())
    throw Error("'" + path + "' is compiled for CPU features this machine lacks: " + join(lacking, " ") + " (isa " +
                tisa + "); " + again + ", or with --cpu-isa for the oldest CPU it runs on");
}

}    // namespace

/* ---------------------------------------------------------------------- */

struct Model::Impl {
  torch::jit::Module module;    // a TorchScript file
  torch::jit::Module member0;   // a committee file: its members[0], run alone by CommitteeCall::FIRST_ALONE
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> package;    // or an AOTInductor package
  torch::Device device{torch::kCPU};
  bool optimize = false;
  std::string package_threads;    // a package's loops: "dynamic" or "serial" (its target record); "" for TorchScript
  Metadata meta;
  torch::Tensor zero_shifts;    // [capacity, 3] on the device; narrowed to each call's edges
  torch::Tensor atom_energy, forces, virial, atom_virial;    // host float64 contiguous
  torch::Tensor member_energy, member_forces;    // a committee file: [K, n_local], [K, n_atoms, 3]

  // Views of the host outputs above (valid until the next call); the members' only after a call of all of them.
  Outputs outputs(bool want_atom_virial, bool all_members)
  {
    Outputs out;
    out.atom_energy = atom_energy.data_ptr<double>();
    out.forces = forces.data_ptr<double>();
    out.virial = virial.data_ptr<double>();
    out.atom_virial = want_atom_virial ? atom_virial.data_ptr<double>() : nullptr;
    if (all_members) {
      out.committee_size = meta.committee_size;
      out.member_energy = member_energy.data_ptr<double>();
      out.member_forces = member_forces.data_ptr<double>();
    }
    return out;
  }

  // message passing by exchange: what the file offers, and the tensors of the current step
  std::string mp_missing = "not checked";
  int mp_blocks = 0;
  bool mp_pair = false;    // mp_has_pair(): exchange_readout adds mp_pair's energies and edge gradients
  bool mp_geometry = false;    // GEOMETRY_METHODS: with the graph kept, the edges' geometry once per step
  std::vector<int> mp_widths;
  c10::ScalarType dtype = c10::ScalarType::Double;
  struct Chunk {
    int64_t c0, c1, e0, e1;
    torch::Tensor edge_index;    // the chunk's edges, centres shifted by -c0
  };
  struct Step {
    int64_t n_atoms = 0, n_local = 0, n_edges = 0;
    bool want_atom_virial = false;
    torch::Tensor types, centre_type, edge_index, edge_vec, edge_grad;
    std::vector<Chunk> chunks;
    std::vector<torch::Tensor> state;    // state[b]: [n_local, S_b], b = 0..L
    std::vector<torch::Tensor> x;        // x[b]: [n_atoms, W_b]
    torch::Tensor g_state;               // d E / d state[b+1] while going backward
    // keep-graph path (one chunk): each block's differentiable inputs and outputs, differentiated in the
    // backward pass instead of recomputing the block
    bool keep_graph = false;
    std::vector<torch::Tensor> vec_in, state_in, state_out, x_out;
    // ... and with mp_geometry: the geometry of the step's edges (graph kept to edge_vec's leaf geo_vec), every
    // block's detached copy of it, and the gradient on it summed over the blocks differentiated so far
    torch::Tensor geo_vec;
    std::vector<torch::Tensor> geo, geo_grad;
    std::vector<std::vector<torch::Tensor>> geo_in;
    torch::Tensor rows;                  // host rows handed to the caller (float32 models: float32, packed)
  } step;

  void check_exchange(const std::string &path);
  void load_package(const std::string &path, caffe2::serialize::PyTorchStreamReader &reader,
                    const std::vector<std::string> &names);
  torch::Tensor rows_in(const double *rows, int64_t n, int64_t width) const;
  const double *rows_out(const torch::Tensor &t);
};

// Every mp_* method present and consistent with the metadata, else the reason in mp_missing; whether the model
// has a short-range pair term (mp_has_pair). A version-4 file (PAIR_FORMAT_VERSION) must have the whole block
// interface, the pair methods included, and is refused otherwise: mdpot.deploy.load_model has the same rule.
void Model::Impl::check_exchange(const std::string &path)
{
  namespace c = contract;
  dtype = meta.model_dtype == "float32" ? c10::ScalarType::Float : c10::ScalarType::Double;
  const bool pair_version = meta.format_version == c::PAIR_FORMAT_VERSION;
  auto unsupported = [&](const std::string &why) {
    mp_missing = why;
    if (pair_version)
      throw Error("'" + path + "': " + c::KEY_FORMAT_VERSION + " " + std::to_string(c::PAIR_FORMAT_VERSION) +
                  " is for message-passing TorchScript files with a short-range pair term, but " + why +
                  "; deploy it again");
  };
  auto absent = [&](const char *const *names, int n) {
    std::vector<std::string> out;
    for (int k = 0; k < n; ++k)
      if (!module.find_method(names[k])) out.emplace_back(names[k]);
    return out;
  };
  const auto missing = absent(c::BLOCK_METHODS, c::BLOCK_METHODS_COUNT);
  const auto missing_pair = absent(c::PAIR_METHODS, c::PAIR_METHODS_COUNT);
  mp_geometry = absent(c::GEOMETRY_METHODS, c::GEOMETRY_METHODS_COUNT).empty();
  if (!missing.empty())
    return unsupported(static_cast<int>(missing.size()) == c::BLOCK_METHODS_COUNT
                           ? "its module has no block-by-block (mp_*) methods (strictly local, wrapped, or deployed "
                             "before them)"
                           : "its module lacks " + join(missing, ", "));
  try {
    mp_blocks = static_cast<int>(module.run_method("mp_num_blocks").toInt());
    mp_widths.clear();
    for (const auto &w : module.run_method("mp_feature_widths").toIntList()) mp_widths.push_back(static_cast<int>(w));
    // files of version 2 written before the pair term have neither pair method: no pair term
    mp_pair = missing_pair.empty() && module.run_method("mp_has_pair").toBool();
  } catch (const std::exception &e) {
    throw Error("'" + path + "': cannot read its mp_* methods: " + one_line(e));
  }
  if (mp_blocks != meta.num_layers || static_cast<int>(mp_widths.size()) != mp_blocks)
    return unsupported("mp_num_blocks() = " + std::to_string(mp_blocks) + " and " + std::to_string(mp_widths.size()) +
                       " feature widths do not match num_layers " + std::to_string(meta.num_layers));
  if (!missing_pair.empty() && (pair_version || static_cast<int>(missing_pair.size()) < c::PAIR_METHODS_COUNT))
    return unsupported("its module lacks " + join(missing_pair, ", "));
  mp_missing.clear();
}

// Host rows (mdpot_model.h): a float64 model's W values as W doubles; a float32 model's W values as float32,
// two per double (ceil(W/2) doubles, the last float 0 when W is odd), so the caller's buffers carry half the
// bytes and the bits of the model's own values.
torch::Tensor Model::Impl::rows_in(const double *rows, int64_t n, int64_t width) const
{
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  if (n * width == 0) return torch::zeros({n, width}, f64.device(device)).to(dtype);
  // a copy always: the caller reuses its buffer, and the rows are kept until the backward pass
  if (dtype == c10::ScalarType::Float) {
    const auto f32 = torch::TensorOptions().dtype(torch::kFloat32);
    auto packed = torch::from_blob(const_cast<double *>(rows), {n, 2 * ((width + 1) / 2)}, f32);
    return packed.narrow(1, 0, width).to(device, dtype, false, /*copy=*/true).contiguous();
  }
  return torch::from_blob(const_cast<double *>(rows), {n, width}, f64).to(device, dtype, false, /*copy=*/true);
}

const double *Model::Impl::rows_out(const torch::Tensor &t)
{
  if (dtype != c10::ScalarType::Float) {
    step.rows = t.detach().to(torch::kCPU, torch::kFloat64).contiguous();
    return step.rows.data_ptr<double>();
  }
  auto rows = t.detach().to(torch::kCPU, torch::kFloat32);
  if (rows.size(1) % 2) rows = torch::cat({rows, torch::zeros({rows.size(0), 1}, rows.options())}, 1);
  rows = rows.contiguous();
  // a view into the model's own output may start at an odd float
  if (reinterpret_cast<uintptr_t>(rows.data_ptr()) % alignof(double)) rows = rows.clone();
  step.rows = rows;
  return static_cast<const double *>(step.rows.data_ptr());
}

// A package in the order of docs/contract.md: every mdpot record (the metadata rules, version 3 or 6), the digest
// over data/, the target against this machine and the requested device, then AOTInductor loads the program.
void Model::Impl::load_package(const std::string &path, caffe2::serialize::PyTorchStreamReader &reader,
                               const std::vector<std::string> &names)
{
  namespace c = contract;
  PackageRecords records;
  try {
    for (const auto &name : names) {
      auto [data, n] = reader.getRecord(name);
      records.bytes[name].assign(static_cast<const char *>(data.get()), n);
    }
  } catch (const std::exception &e) {
    throw Error("cannot read the AOTInductor package '" + path + "': " + one_line(e));
  }
  std::map<std::string, std::string> raw;
  const std::string folder = std::string(c::AOTI_METADATA_FOLDER) + "/";
  std::vector<const char *> keys(c::ALL_KEYS, c::ALL_KEYS + c::ALL_KEYS_COUNT);
  keys.push_back(c::AOTI_TARGET);
  keys.push_back(c::KEY_KERNELS);
  keys.push_back(c::KEY_BYTES_PER_EDGE);
  for (const char *key : keys) {
    const auto it = records.bytes.find(folder + key);
    if (it != records.bytes.end()) raw[key] = it->second;
  }
  meta = decode(raw, path, /*package=*/true);
  if (raw[c::AOTI_TARGET].empty())
    throw Error("'" + path + "' is not an mdpot package: missing metadata key " + c::AOTI_TARGET +
                " (is it written by `mdpot deploy --format aoti`?)");
  const std::string digest = package_digest(records);
  if (digest != meta.weights_sha256)
    throw Error("'" + path + "': its compiled program does not match the digest recorded at deploy (" +
                digest.substr(0, 12) + "... != " + meta.weights_sha256.substr(0, 12) +
                "...): the package was modified after `mdpot deploy`");
  check_target(records, raw[c::AOTI_TARGET], path, device);
  records.bytes.clear();
  {
    std::map<std::string, JsonField> t;    // read by check_target already; "threads" is optional (older packages)
    if (JsonObjectReader(raw[c::AOTI_TARGET]).read(t) && t.count("threads") && t["threads"].kind == JsonField::String)
      package_threads = t["threads"].text;
  }
  // the program calls torch.ops.mdpot.*: registered before AOTInductor loads it
  if (meta.format_version == c::AOTI_FUSED_FORMAT_VERSION) load_fused_kernels(path);
  try {
    const c10::DeviceIndex index = device.is_cuda() ? (device.has_index() ? device.index() : 0) : -1;
    package = std::make_unique<torch::inductor::AOTIModelPackageLoader>(path, c::AOTI_PROGRAM,
                                                                        /*run_single_threaded=*/false,
                                                                        /*num_runners=*/1, index);
  } catch (const std::exception &e) {
    throw Error("cannot load the AOTInductor package '" + path + "': " + one_line(e));
  }
  dtype = meta.model_dtype == "float32" ? c10::ScalarType::Float : c10::ScalarType::Double;
  mp_missing = "it is an AOTInductor package: one compiled whole-graph program, without the block-by-block "
               "(mp_*) methods";
}

namespace {

// The metadata records (extra/KEY) a TorchScript file may hold: the contract's keys, the kernels, the optional
// bytes per edge and the committee keys (committee files only).
std::vector<std::string> metadata_keys()
{
  namespace c = contract;
  std::vector<std::string> keys(c::ALL_KEYS, c::ALL_KEYS + c::ALL_KEYS_COUNT);
  for (const char *key : {c::KEY_KERNELS, c::KEY_BYTES_PER_EDGE, c::KEY_COMMITTEE_SIZE, c::KEY_COMMITTEE_MEMBERS})
    keys.emplace_back(key);
  return keys;
}

// A record's bytes as text; "" when the archive has no such record.
std::string record_text(caffe2::serialize::PyTorchStreamReader &reader, const std::string &name)
{
  if (!reader.hasRecord(name)) return std::string();
  auto [data, n] = reader.getRecord(name);
  return std::string(static_cast<const char *>(data.get()), n);
}

// Whether a TorchScript file's code calls mdpot's fused operators, from its records: its format version says so,
// or, for a committee file (whose members carry either kernels), its kernels record.
bool calls_fused_kernels(caffe2::serialize::PyTorchStreamReader &reader)
{
  namespace c = contract;
  const std::string version = record_text(reader, std::string("extra/") + c::KEY_FORMAT_VERSION);
  if (version == std::to_string(c::COMMITTEE_FORMAT_VERSION))
    return record_text(reader, std::string("extra/") + c::KEY_KERNELS) == "fused";
  return full_match(version, c::INTEGER_PATTERN) && fused_version(digits_value(version), false);
}

}

std::string bound_device(const std::string &path, std::string *why)
{
  namespace c = contract;
  try {
    caffe2::serialize::PyTorchStreamReader reader(path);
    const std::string target = record_text(reader, std::string(c::AOTI_METADATA_FOLDER) + "/" + c::AOTI_TARGET);
    if (!target.empty()) {
      std::map<std::string, JsonField> t;
      if (!JsonObjectReader(target).read(t) || t["device"].kind != JsonField::String) return "";
      if (why) *why = "it is an AOTInductor package compiled for " + t["device"].text;
      return t["device"].text;
    }
    if (!calls_fused_kernels(reader)) return "";
    if (why) *why = std::string("it calls mdpot's fused kernels (") + c::KEY_KERNELS + " fused), which run on the CPU only";
    return "cpu";
  } catch (const std::exception &) {
    return "";    // unreadable: loading it says why
  }
}

Model::Model(const std::string &path, const std::string &device, bool optimize) : impl(new Impl)
{
  impl->optimize = optimize;
  try {
    impl->device = torch::Device(device);
  } catch (const std::exception &e) {
    throw Error("device '" + device + "' is not a torch device: " + one_line(e));
  }
  // which kind of file, from its content: a package has data/aotinductor/ records
  {
    std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;
    std::vector<std::string> names;
    try {
      reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
      names = reader->getAllRecords();
    } catch (const std::exception &e) {    // not a zip archive of torch's layout (torch::jit::load reads it alike)
      throw Error("cannot read '" + path + "' as a TorchScript model or an AOTInductor package: " + one_line(e));
    }
    const std::string aoti = std::string(contract::AOTI_DIGESTED_FOLDER) + "/aotinductor/";
    auto has = [&](const std::string &prefix) {
      return std::any_of(names.begin(), names.end(), [&](const std::string &n) { return n.compare(0, prefix.size(), prefix) == 0; });
    };
    if (has(aoti)) {
      impl->load_package(path, *reader, names);
      return;
    }
    if (!has("code/") && !has("constants.pkl"))
      throw Error("cannot read '" + path + "' as a TorchScript model or an AOTInductor package: it has no code/ or " +
                  aoti + " records");
    const std::string version = record_text(*reader, std::string("extra/") + contract::KEY_FORMAT_VERSION);
    if (full_match(version, contract::INTEGER_PATTERN)) readable_version(version, path);
    // every metadata key is checked from the records, before torch reads (and compiles) the code
    std::map<std::string, std::string> raw;
    for (const auto &key : metadata_keys()) raw[key] = record_text(*reader, "extra/" + key);
    impl->meta = decode(raw, path, /*package=*/false);
    // a file that calls the fused operators loads only once they are registered
    const bool fused = calls_fused_kernels(*reader);
    if (fused && !impl->device.is_cpu())
      throw Error("'" + path + "' calls mdpot's fused kernels (" + contract::KEY_KERNELS + " fused), which run on " +
                  "the CPU only, not on " + impl->device.str() + "; deploy it with --kernels reference to run it there");
    if (fused) load_fused_kernels(path);
  }
  try {
    impl->module = torch::jit::load(path, impl->device);
  } catch (const std::exception &e) {
    throw Error("cannot read '" + path + "' as a TorchScript model or an AOTInductor package: " + one_line(e));
  }
  std::string digest;
  try {
    digest = weights_digest(impl->module);
  } catch (const Error &e) {
    throw Error("'" + path + "': " + e.what());
  } catch (const std::exception &e) {
    throw Error("'" + path + "': cannot read the weights: " + one_line(e));
  }
  if (digest != impl->meta.weights_sha256)
    throw Error("'" + path + "': weights do not match the digest recorded at deploy (" + digest.substr(0, 12) +
                "... != " + impl->meta.weights_sha256.substr(0, 12) +
                "...): the file was modified after `mdpot deploy`");
  impl->module.eval();
  if (impl->meta.committee_size > 1 && !impl->module.find_method(contract::COMMITTEE_METHOD))
    throw Error("'" + path + "': a committee file (model format version " +
                std::to_string(contract::COMMITTEE_FORMAT_VERSION) + ") without its " + contract::COMMITTEE_METHOD +
                " method; deploy it again");
  if (impl->meta.committee_size > 1) {
    // CommitteePotential keeps its members in the nn.ModuleList `members`, whose children are named "0", "1", ...
    try {
      impl->member0 = impl->module.attr("members").toModule().attr("0").toModule();
    } catch (const std::exception &e) {
      throw Error("'" + path + "': a committee file whose module has no members[0]: " + one_line(e));
    }
  }
  impl->check_exchange(path);
}

Model::~Model() = default;

const Metadata &Model::metadata() const
{
  return impl->meta;
}

std::string Model::device() const
{
  return impl->device.str();
}

std::string Model::format() const
{
  return impl->package ? "aoti" : "torchscript";
}

std::string Model::package_threads() const
{
  return impl->package_threads;
}

void Model::set_optimize(bool optimize)
{
  impl->optimize = optimize;
}

Outputs Model::run(const Inputs &in, CommitteeCall call)
{
  auto &d = *impl;
  const bool committee = d.meta.committee_size > 1;
  const bool all_members = committee && call != CommitteeCall::FIRST_ALONE;
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  const auto i64 = torch::TensorOptions().dtype(torch::kInt64);
  if (in.n_atoms == 0) {    // nothing to evaluate (a rank without atoms of the model's types)
    d.atom_energy = torch::zeros({0}, f64);
    d.forces = torch::zeros({0, 3}, f64);
    d.virial = torch::zeros({3, 3}, f64);
    d.atom_virial = torch::zeros({0, 3, 3}, f64);
    d.member_energy = torch::zeros({d.meta.committee_size, 0}, f64);
    d.member_forces = torch::zeros({d.meta.committee_size, 0, 3}, f64);
  } else {
    size_t n_outputs = 0;
    auto shape_is = [](const torch::Tensor &t, std::vector<int64_t> s) { return t.sizes().vec() == s; };
    try {
      auto pos = torch::from_blob(const_cast<double *>(in.pos), {in.n_atoms, 3}, f64).to(d.device);
      auto types = torch::from_blob(const_cast<int64_t *>(in.atom_type), {in.n_atoms}, i64).to(d.device);
      auto edges = torch::from_blob(const_cast<int64_t *>(in.edge_index), {2, in.n_edges}, i64).to(d.device);
      if (!d.zero_shifts.defined() || d.zero_shifts.size(0) < in.n_edges)
        d.zero_shifts = torch::zeros({std::max<int64_t>(in.n_edges + in.n_edges / 4, 64), 3}, f64.device(d.device));
      auto shifts = d.zero_shifts.narrow(0, 0, in.n_edges);
      std::vector<torch::Tensor> out;
      if (d.package) {
        // the program's fifth input: n_local as the first dimension of an empty tensor
        auto local = torch::empty({in.n_local, 0}, f64.device(d.device));
        out = d.package->run({pos, types, edges, shifts, local});
      } else {
        std::vector<torch::jit::IValue> args{pos, types, edges, shifts, in.n_local, in.want_atom_virial};
        ExecutorOptimizeGuard guard(d.optimize);
        const auto tuple = (all_members ? d.module.get_method(contract::COMMITTEE_METHOD)(std::move(args))
                            : committee ? d.member0.forward(std::move(args))
                                        : d.module.forward(std::move(args))).toTuple();
        for (const auto &v : tuple->elements()) out.push_back(v.toTensor());
      }
      n_outputs = out.size();
      if (n_outputs != 4) throw Error("the model returned " + std::to_string(n_outputs) + " outputs, the contract has 4");
      auto host = [](const torch::Tensor &t) { return t.to(torch::kCPU, torch::kFloat64).contiguous(); };
      if (all_members) {
        // every member's outputs [K, ...]; the mean as the file's forward forms it (mdpot.deploy.committee_mean):
        // x_0 + mean_k (x_k - x_0), exactly x_0 for identical members; or member 0's as they are
        const int64_t k = d.meta.committee_size;
        for (size_t o = 0; o < out.size(); ++o)
          if (out[o].dim() < 1 || out[o].size(0) != k)
            throw Error("the committee's " + std::string(contract::COMMITTEE_METHOD) + " returned output " +
                        std::to_string(o) + " of shape " + shape_str(out[o]) + ", expected a leading axis of " +
                        std::to_string(k) + " members");
        d.member_energy = host(out[0]);
        d.member_forces = host(out[1]);
        if (!shape_is(d.member_energy, {k, in.n_local}) || !shape_is(d.member_forces, {k, in.n_atoms, 3}))
          throw Error("committee output shapes atom_energy " + shape_str(d.member_energy) + " forces " +
                      shape_str(d.member_forces) + " do not match the contract for " + std::to_string(k) +
                      " members, " + std::to_string(in.n_local) + " local / " + std::to_string(in.n_atoms) +
                      " total atoms");
        auto mean = [](const torch::Tensor &stacked) {
          const auto first = stacked.select(0, 0);
          return first + (stacked - first.unsqueeze(0)).mean(0);
        };
        if (call == CommitteeCall::FIRST)
          out = {out[0].select(0, 0), out[1].select(0, 0), out[2].select(0, 0), out[3].select(0, 0)};
        else
          out = {mean(out[0]), mean(out[1]), mean(out[2]), mean(out[3])};
      }
      d.atom_energy = host(out[0]);
      d.forces = host(out[1]);
      d.virial = host(out[2]);
      // a package always computes the per-atom virial; dropped here when not asked for
      d.atom_virial = in.want_atom_virial ? host(out[3]) : torch::zeros({0, 3, 3}, f64);
    } catch (const Error &) {
      throw;
    } catch (const std::exception &e) {
      throw Error("model evaluation failed (" + std::to_string(in.n_atoms) + " atoms, " + std::to_string(in.n_edges) +
                  " edges): " + one_line(e));
    }
    if (!shape_is(d.atom_energy, {in.n_local}) || !shape_is(d.forces, {in.n_atoms, 3}) ||
        !shape_is(d.virial, {3, 3}) || (in.want_atom_virial && !shape_is(d.atom_virial, {in.n_atoms, 3, 3})))
      throw Error("model output shapes atom_energy " + shape_str(d.atom_energy) + " forces " + shape_str(d.forces) +
                  " virial " + shape_str(d.virial) + " atom_virial " + shape_str(d.atom_virial) +
                  " do not match the contract for " + std::to_string(in.n_local) + " local / " +
                  std::to_string(in.n_atoms) + " total atoms");
  }
  return d.outputs(in.want_atom_virial, all_members);
}

double Model::memory_usage() const
{
  double bytes = 0.0;
  for (const auto *t : {&impl->zero_shifts, &impl->atom_energy, &impl->forces, &impl->virial, &impl->atom_virial,
                        &impl->member_energy, &impl->member_forces})
    if (t->defined()) bytes += static_cast<double>(t->nbytes());
  const auto &st = impl->step;
  for (const auto *t : {&st.types, &st.centre_type, &st.edge_index, &st.edge_vec, &st.edge_grad, &st.g_state, &st.rows})
    if (t->defined()) bytes += static_cast<double>(t->nbytes());
  for (const auto &v : {&st.state, &st.x})
    for (const auto &t : *v)
      if (t.defined()) bytes += static_cast<double>(t.nbytes());
  for (const auto &c : st.chunks) bytes += static_cast<double>(c.edge_index.nbytes());
  return bytes;
}

/* ---------------------------------------------------------------------- */

std::string Model::exchange_unsupported() const
{
  return impl->mp_missing;
}

int Model::exchange_blocks() const
{
  return impl->mp_blocks;
}

bool Model::exchange_geometry_once() const
{
  return impl->mp_geometry;
}

const std::vector<int> &Model::exchange_widths() const
{
  return impl->mp_widths;
}

int Model::exchange_chunks() const
{
  return static_cast<int>(impl->step.chunks.size());
}

void Model::exchange_begin(const Inputs &in, int64_t max_edges)
{
  auto &d = *impl;
  auto &st = d.step;
  if (!d.mp_missing.empty()) throw Error("the model cannot be run block by block: " + d.mp_missing);
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  const auto i64 = torch::TensorOptions().dtype(torch::kInt64);
  const int L = d.mp_blocks;
  st = Impl::Step();
  st.n_atoms = in.n_atoms;
  st.n_local = in.n_local;
  st.n_edges = in.n_edges;
  st.want_atom_virial = in.want_atom_virial;
  st.state.assign(L + 1, torch::Tensor());
  st.x.assign(L, torch::Tensor());
  for (auto *v : {&st.vec_in, &st.state_in, &st.state_out, &st.x_out}) v->assign(L, torch::Tensor());
  st.geo_vec = torch::Tensor();
  st.geo.clear();
  st.geo_grad.clear();
  st.geo_in.assign(L, {});

  // chunks of consecutive centres with at most max_edges edges (one centre at least)
  std::vector<int64_t> count(in.n_local, 0);
  const int64_t *centre = in.edge_index;
  for (int64_t e = 0; e < in.n_edges; ++e) {
    if (centre[e] < 0 || centre[e] >= in.n_local || (e > 0 && centre[e] < centre[e - 1]))
      throw Error("exchange: edge " + std::to_string(e) + " has centre " + std::to_string(centre[e]) +
                  " (centres must be local atoms, in order)");
    ++count[centre[e]];
  }
  try {
    torch::NoGradGuard no_grad;
    st.types = torch::from_blob(const_cast<int64_t *>(in.atom_type), {in.n_atoms}, i64).to(d.device);
    st.centre_type = st.types.narrow(0, 0, in.n_local);
    st.edge_index = torch::from_blob(const_cast<int64_t *>(in.edge_index), {2, in.n_edges}, i64).to(d.device);
    auto pos = torch::from_blob(const_cast<double *>(in.pos), {in.n_atoms, 3}, f64).to(d.device);
    st.edge_vec = pos.index_select(0, st.edge_index[1]) - pos.index_select(0, st.edge_index[0]);
    st.edge_grad = torch::zeros({in.n_edges, 3}, f64.device(d.device));
    int64_t c0 = 0, e0 = 0;
    while (c0 < in.n_local) {
      int64_t c1 = c0, e1 = e0;
      while (c1 < in.n_local && (c1 == c0 || e1 - e0 + count[c1] <= max_edges)) e1 += count[c1++];
      Impl::Chunk ch{c0, c1, e0, e1, st.edge_index.narrow(1, e0, e1 - e0).clone()};
      ch.edge_index[0].sub_(c0);
      st.chunks.push_back(std::move(ch));
      c0 = c1;
      e0 = e1;
    }
    if (in.n_local > 0) {
      auto out = d.module.run_method("mp_embed", st.types, in.n_local).toTuple();
      st.state[0] = out->elements()[0].toTensor();
      st.x[0] = out->elements()[1].toTensor();
    }
    st.keep_graph = st.chunks.size() == 1;
  } catch (const std::exception &e) {
    throw Error("embedding failed (" + std::to_string(in.n_atoms) + " atoms, " + std::to_string(in.n_edges) +
                " edges): " + one_line(e));
  }
}

const double *Model::exchange_forward(int b, const double *x_rows)
{
  auto &d = *impl;
  auto &st = d.step;
  const int L = d.mp_blocks;
  const int64_t w_next = b + 1 < L ? d.mp_widths[b + 1] : 0;
  if (st.n_local == 0) return b + 1 < L ? d.rows_out(torch::zeros({0, w_next})) : nullptr;
  try {
    ExecutorOptimizeGuard guard(d.optimize);
    if (b > 0) st.x[b] = d.rows_in(x_rows, st.n_atoms, d.mp_widths[b]);
    if (st.keep_graph) {
      // block 0's inputs are functions of the types: only the edge vectors need gradients there
      torch::AutoGradMode grad(true);
      const auto &ch = st.chunks[0];
      st.state_in[b] = b > 0 ? st.state[b].detach().requires_grad_(true) : st.state[b];
      if (b > 0) st.x[b].requires_grad_(true);
      c10::intrusive_ptr<c10::ivalue::Tuple> out;
      if (d.mp_geometry) {
        if (st.geo.empty()) {    // once per step, before block 0
          st.geo_vec = st.edge_vec.detach().requires_grad_(true);
          for (const auto &t : d.module.run_method("mp_geometry", st.geo_vec).toTensorList()) st.geo.push_back(t);
          st.geo_grad.assign(st.geo.size(), torch::Tensor());
        }
        c10::List<torch::Tensor> in;
        st.geo_in[b].clear();
        for (const auto &t : st.geo) {
          st.geo_in[b].push_back(t.requires_grad() ? t.detach().requires_grad_(true) : t);
          in.push_back(st.geo_in[b].back());
        }
        out = d.module.run_method("mp_block_geometry", b, st.state_in[b], st.x[b], in, ch.edge_index, st.centre_type)
                  .toTuple();
      } else {
        st.vec_in[b] = st.edge_vec.detach().requires_grad_(true);
        out = d.module.run_method("mp_block", b, st.state_in[b], st.x[b], st.vec_in[b], ch.edge_index, st.centre_type)
                  .toTuple();
      }
      st.state_out[b] = out->elements()[0].toTensor();
      st.x_out[b] = out->elements()[1].toTensor();
      st.state[b + 1] = st.state_out[b].detach();
      if (b + 1 == L) return nullptr;
      return d.rows_out(st.x_out[b]);
    }
    torch::NoGradGuard no_grad;    // recomputed with gradients in exchange_backward
    std::vector<torch::Tensor> states, xs;
    for (const auto &ch : st.chunks) {
      auto out = d.module
                     .run_method("mp_block", b, st.state[b].narrow(0, ch.c0, ch.c1 - ch.c0), st.x[b],
                                 st.edge_vec.narrow(0, ch.e0, ch.e1 - ch.e0), ch.edge_index,
                                 st.centre_type.narrow(0, ch.c0, ch.c1 - ch.c0))
                     .toTuple();
      states.push_back(out->elements()[0].toTensor());
      xs.push_back(out->elements()[1].toTensor());
    }
    st.state[b + 1] = states.size() == 1 ? states[0] : torch::cat(states, 0);
    if (b + 1 == L) return nullptr;
    return d.rows_out(xs.size() == 1 ? xs[0] : torch::cat(xs, 0));
  } catch (const std::exception &e) {
    throw Error("message-passing block " + std::to_string(b) + " failed (" + std::to_string(st.n_atoms) + " atoms, " +
                std::to_string(st.n_edges) + " edges): " + one_line(e));
  }
}

const double *Model::exchange_readout()
{
  auto &d = *impl;
  auto &st = d.step;
  if (st.n_local == 0) {
    d.atom_energy = torch::zeros({0}, torch::TensorOptions().dtype(torch::kFloat64));
    return d.atom_energy.data_ptr<double>();
  }
  torch::Tensor energy;
  try {
    torch::AutoGradMode grad(true);
    auto out = d.module.run_method("mp_readout", st.state[d.mp_blocks], st.centre_type).toTuple();
    st.g_state = out->elements()[1].toTensor().detach();
    energy = out->elements()[0].toTensor().detach();
    if (energy.sizes().vec() != std::vector<int64_t>{st.n_local})
      throw Error("readout returned energies of shape " + shape_str(energy) + " for " + std::to_string(st.n_local) +
                  " atoms");
  } catch (const Error &) {
    throw;
  } catch (const std::exception &e) {
    throw Error("readout failed (" + std::to_string(st.n_local) + " atoms): " + one_line(e));
  }
  if (d.mp_pair) {
    // the short-range pair term on the local-centred edges, chunk by chunk like the blocks (it is additive over
    // edges): its energies join the readout's, its edge gradients the blocks' (summed into edge_grad during the
    // backward pass, turned into forces by finish). A chunk's edges keep their centre rows (mp_pair reads the
    // centres' types from the rows' types), so the chunk [c0, c1) is called with n_centres = c1.
    try {
      ExecutorOptimizeGuard guard(d.optimize);
      torch::AutoGradMode grad(true);
      energy = energy.to(torch::kFloat64).clone();
      for (const auto &ch : st.chunks) {
        const int64_t ne = ch.e1 - ch.e0;
        auto out = d.module
                       .run_method("mp_pair", st.edge_vec.narrow(0, ch.e0, ne), st.edge_index.narrow(1, ch.e0, ne),
                                   st.types, ch.c1)
                       .toTuple();
        const auto pair_energy = out->elements()[0].toTensor().detach();
        const auto pair_grad = out->elements()[1].toTensor().detach();
        if (pair_energy.sizes().vec() != std::vector<int64_t>{ch.c1} ||
            pair_grad.sizes().vec() != std::vector<int64_t>{ne, 3})
          throw Error("pair term returned energies of shape " + shape_str(pair_energy) + " and edge gradients of " +
                      "shape " + shape_str(pair_grad) + " for " + std::to_string(ch.c1) + " atoms and " +
                      std::to_string(ne) + " edges");
        energy.narrow(0, ch.c0, ch.c1 - ch.c0).add_(pair_energy.narrow(0, ch.c0, ch.c1 - ch.c0).to(torch::kFloat64));
        st.edge_grad.narrow(0, ch.e0, ne).add_(pair_grad.to(torch::kFloat64));
      }
    } catch (const Error &) {
      throw;
    } catch (const std::exception &e) {
      throw Error("pair term failed (" + std::to_string(st.n_local) + " atoms, " + std::to_string(st.n_edges) +
                  " edges): " + one_line(e));
    }
  }
  d.atom_energy = energy.to(torch::kCPU, torch::kFloat64).contiguous();
  return d.atom_energy.data_ptr<double>();
}

const double *Model::exchange_backward(int b, const double *g_x_local)
{
  auto &d = *impl;
  auto &st = d.step;
  const int L = d.mp_blocks;
  if (st.n_local == 0) return b > 0 ? d.rows_out(torch::zeros({st.n_atoms, d.mp_widths[b]})) : nullptr;
  try {
    ExecutorOptimizeGuard guard(d.optimize);
    torch::AutoGradMode grad(true);
    const bool input_grads = b > 0;
    torch::Tensor g_x_next = d.rows_in(g_x_local, st.n_local, b + 1 < L ? d.mp_widths[b + 1] : 0);
    if (st.keep_graph) {
      // the edges' part of the inputs: the vectors, or the geometry tensors that take gradients
      std::vector<torch::Tensor> outputs, grad_outputs, inputs;
      std::vector<size_t> geo_of;
      if (d.mp_geometry) {
        for (size_t k = 0; k < st.geo_in[b].size(); ++k)
          if (st.geo_in[b][k].requires_grad()) {
            inputs.push_back(st.geo_in[b][k]);
            geo_of.push_back(k);
          }
      } else {
        inputs.push_back(st.vec_in[b]);
      }
      const size_t n_edge_inputs = inputs.size();
      for (const auto &[out, g] : {std::make_pair(st.state_out[b], st.g_state), std::make_pair(st.x_out[b], g_x_next)})
        if (out.requires_grad() && out.numel() > 0) {
          outputs.push_back(out);
          grad_outputs.push_back(g);
        }
      if (input_grads) {
        inputs.push_back(st.state_in[b]);
        inputs.push_back(st.x[b]);
      }
      std::vector<torch::Tensor> grads(inputs.size());
      if (!outputs.empty() && !inputs.empty())
        grads = torch::autograd::grad(outputs, inputs, grad_outputs, /*retain_graph=*/false, /*create_graph=*/false,
                                      /*allow_unused=*/true);
      auto or_zeros = [](const torch::Tensor &g, const torch::Tensor &like) {
        return g.defined() ? g.detach() : torch::zeros_like(like);
      };
      if (d.mp_geometry) {
        for (size_t j = 0; j < geo_of.size(); ++j) {
          auto &sum = st.geo_grad[geo_of[j]];
          if (grads[j].defined()) sum = sum.defined() ? sum + grads[j].detach() : grads[j].detach();
        }
        st.geo_in[b].clear();
        if (!input_grads) {    // block 0, the last: the geometry once, with the gradient every block left on it
          std::vector<torch::Tensor> geo_out, geo_g;
          for (size_t k = 0; k < st.geo.size(); ++k)
            if (st.geo_grad[k].defined() && st.geo[k].requires_grad()) {
              geo_out.push_back(st.geo[k]);
              geo_g.push_back(st.geo_grad[k]);
            }
          if (!geo_out.empty()) {
            auto g = torch::autograd::grad(geo_out, {st.geo_vec}, geo_g, /*retain_graph=*/false,
                                           /*create_graph=*/false, /*allow_unused=*/true);
            if (g[0].defined()) st.edge_grad.add_(g[0].detach().to(torch::kFloat64));
          }
          st.geo_vec = torch::Tensor();
          st.geo.clear();
          st.geo_grad.clear();
        }
      } else {
        st.edge_grad.add_(or_zeros(grads[0], st.vec_in[b]).to(torch::kFloat64));
      }
      st.vec_in[b] = st.state_in[b] = st.state_out[b] = st.x_out[b] = torch::Tensor();
      st.state[b + 1] = torch::Tensor();
      if (!input_grads) {
        st.g_state = torch::Tensor();
        return nullptr;
      }
      st.g_state = or_zeros(grads[n_edge_inputs], st.state[b]);
      const auto g_x = or_zeros(grads[n_edge_inputs + 1], st.x[b]);
      st.x[b] = torch::Tensor();
      return d.rows_out(g_x);
    }
    std::vector<torch::Tensor> g_states;
    torch::Tensor g_x;
    for (const auto &ch : st.chunks) {
      const int64_t nc = ch.c1 - ch.c0;
      auto out = d.module
                     .run_method("mp_block_vjp", b, st.state[b].narrow(0, ch.c0, nc), st.x[b],
                                 st.edge_vec.narrow(0, ch.e0, ch.e1 - ch.e0), ch.edge_index,
                                 st.centre_type.narrow(0, ch.c0, nc), st.g_state.narrow(0, ch.c0, nc),
                                 g_x_next.narrow(0, ch.c0, nc), input_grads)
                     .toTuple();
      const auto &el = out->elements();
      st.edge_grad.narrow(0, ch.e0, ch.e1 - ch.e0).add_(el[2].toTensor().detach());
      if (input_grads) {
        g_states.push_back(el[0].toTensor().detach());
        const auto gx = el[1].toTensor().detach();
        g_x = g_x.defined() ? g_x + gx : gx;
      }
    }
    st.state[b + 1] = torch::Tensor();
    if (!input_grads) {
      st.g_state = torch::Tensor();
      return nullptr;
    }
    st.g_state = g_states.size() == 1 ? g_states[0] : torch::cat(g_states, 0);
    st.x[b] = torch::Tensor();
    return d.rows_out(g_x);
  } catch (const std::exception &e) {
    throw Error("backward of message-passing block " + std::to_string(b) + " failed (" + std::to_string(st.n_atoms) +
                " atoms, " + std::to_string(st.n_edges) + " edges): " + one_line(e));
  }
}

Outputs Model::exchange_finish()
{
  auto &d = *impl;
  auto &st = d.step;
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  if (st.n_atoms == 0) {
    d.forces = torch::zeros({0, 3}, f64);
    d.virial = torch::zeros({3, 3}, f64);
    d.atom_virial = torch::zeros({0, 3, 3}, f64);
    d.member_energy = torch::zeros({d.meta.committee_size, 0}, f64);
    d.member_forces = torch::zeros({d.meta.committee_size, 0, 3}, f64);
  } else {
    try {
      auto out = d.module
                     .run_method("mp_edge_derivatives", st.n_atoms, st.edge_vec, st.edge_grad, st.edge_index,
                                 st.want_atom_virial)
                     .toTuple();
      auto host = [](const torch::jit::IValue &v) { return v.toTensor().to(torch::kCPU, torch::kFloat64).contiguous(); };
      d.forces = host(out->elements()[0]);
      d.virial = host(out->elements()[1]);
      d.atom_virial = host(out->elements()[2]);
    } catch (const std::exception &e) {
      throw Error("edge derivatives failed (" + std::to_string(st.n_atoms) + " atoms): " + one_line(e));
    }
  }
  st.x.clear();
  st.state.clear();
  return d.outputs(st.want_atom_virial, d.meta.committee_size > 1);
}

/* ---------------------------------------------------------------------- */

int cuda_device_count()
{
  try {
    return torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
  } catch (const std::exception &e) {
    throw Error("cannot query CUDA: " + one_line(e));
  }
}

void set_num_threads(int n)
{
  at::set_num_threads(n);
}

int num_threads()
{
  return at::get_num_threads();
}

std::string torch_version()
{
  return MDPOT_TORCH_VERSION;
}

/* ---------------------------------------------------------------------- */

namespace {
std::mutex malloc_mutex;
int malloc_holders = 0;
}    // namespace

bool MallocTuning::supported()
{
#if defined(__GLIBC__)
  return true;
#else
  return false;
#endif
}

MallocTuning::MallocTuning()
{
#if defined(__GLIBC__)
  std::lock_guard<std::mutex> lock(malloc_mutex);
  if (malloc_holders++ == 0) {
    mallopt(M_MMAP_THRESHOLD, 1 << 30);
    mallopt(M_TRIM_THRESHOLD, 0x7fffffff);
    mallopt(M_TOP_PAD, 1 << 28);
  }
#endif
}

MallocTuning::~MallocTuning()
{
#if defined(__GLIBC__)
  std::lock_guard<std::mutex> lock(malloc_mutex);
  if (--malloc_holders == 0) {
    // glibc's documented defaults (mallopt(3)); its dynamic mmap threshold stays off once set
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    mallopt(M_TRIM_THRESHOLD, 128 * 1024);
    mallopt(M_TOP_PAD, 0);
  }
#endif
}

/* ----------------------------------------------------------------------
   SHA-256 after FIPS 180-4. The round constants are the first 32 bits of the fractional parts of the
   cube roots of the first 64 primes, the initial hash those of the square roots of the first 8: they
   are computed here exactly with integer roots instead of being typed in.
------------------------------------------------------------------------- */

namespace {

struct Sha256Constants {
  uint32_t k[64];
  uint32_t h0[8];
  Sha256Constants()
  {
    int primes[64], n = 0;
    for (int p = 2; n < 64; ++p) {
      bool prime = true;
      for (int q = 2; q * q <= p; ++q)
        if (p % q == 0) prime = false;
      if (prime) primes[n++] = p;
    }
    using u128 = unsigned __int128;
    // largest x with x^power <= p * 2^(32 * power): floor(p^(1/power) * 2^32); its low 32 bits are the
    // fractional part's first 32 bits
    auto root_bits = [](int p, int power) {
      const u128 target = static_cast<u128>(p) << (32 * power);
      uint64_t lo = 0, hi = uint64_t(1) << 40;
      while (lo < hi) {
        const uint64_t mid = lo + (hi - lo + 1) / 2;
        u128 v = 1;
        for (int e = 0; e < power; ++e) v *= mid;
        if (v <= target)
          lo = mid;
        else
          hi = mid - 1;
      }
      return static_cast<uint32_t>(lo & 0xffffffffu);
    };
    for (int i = 0; i < 64; ++i) k[i] = root_bits(primes[i], 3);
    for (int i = 0; i < 8; ++i) h0[i] = root_bits(primes[i], 2);
  }
};

const Sha256Constants &sha256_constants()
{
  static const Sha256Constants c;
  return c;
}

inline uint32_t rotr(uint32_t x, int n)
{
  return (x >> n) | (x << (32 - n));
}

}    // namespace

Sha256::Sha256()
{
  std::memcpy(state, sha256_constants().h0, sizeof(state));
}

void Sha256::compress(const unsigned char *p)
{
  const uint32_t *K = sha256_constants().k;
  uint32_t w[64];
  for (int t = 0; t < 16; ++t)
    w[t] = (uint32_t(p[4 * t]) << 24) | (uint32_t(p[4 * t + 1]) << 16) | (uint32_t(p[4 * t + 2]) << 8) |
        uint32_t(p[4 * t + 3]);
  for (int t = 16; t < 64; ++t) {
    const uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
    const uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
    w[t] = w[t - 16] + s0 + w[t - 7] + s1;
  }
  uint32_t a = state[0], b = state[1], c = state[2], d = state[3], e = state[4], f = state[5], g = state[6],
           h = state[7];
  for (int t = 0; t < 64; ++t) {
    const uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[t] + w[t];
    const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    h = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  state[0] += a;
  state[1] += b;
  state[2] += c;
  state[3] += d;
  state[4] += e;
  state[5] += f;
  state[6] += g;
  state[7] += h;
}

void Sha256::update(const void *data, size_t n)
{
  const auto *p = static_cast<const unsigned char *>(data);
  total += n;
  while (n > 0) {
    if (fill == 0 && n >= 64) {
      compress(p);
      p += 64;
      n -= 64;
      continue;
    }
    const size_t take = std::min(n, 64 - fill);
    std::memcpy(block + fill, p, take);
    fill += take;
    p += take;
    n -= take;
    if (fill == 64) {
      compress(block);
      fill = 0;
    }
  }
}

std::string Sha256::hexdigest()
{
  const uint64_t bits = total * 8;
  const unsigned char one = 0x80, zero = 0;
  update(&one, 1);
  while (fill != 56) update(&zero, 1);
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(bits >> (56 - 8 * i));
  update(len, 8);
  static const char *hex = "0123456789abcdef";
  std::string out;
  for (uint32_t v : state)
    for (int shift = 28; shift >= 0; shift -= 4) out += hex[(v >> shift) & 0xf];
  return out;
}

/* ----------------------------------------------------------------------
   JSON syntax (RFC 8259) as Python's json.loads in decode() accepts it: NaN/Infinity refused, control
   characters refused inside strings, nesting limited to 500 levels.
------------------------------------------------------------------------- */

namespace {

class JsonChecker {
 public:
  explicit JsonChecker(const std::string &s) : s(s) {}
  bool document()
  {
    skip_ws();
    if (!value(0)) return false;
    skip_ws();
    return i == s.size();
  }

 private:
  const std::string &s;
  size_t i = 0;

  bool at(char c) const { return i < s.size() && s[i] == c; }
  void skip_ws()
  {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  }
  bool literal(const char *word)
  {
    const size_t n = std::strlen(word);
    if (s.compare(i, n, word) != 0) return false;
    i += n;
    return true;
  }
  bool digits()
  {
    const size_t start = i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
    return i > start;
  }
  bool number()
  {
    if (at('-')) ++i;
    if (at('0'))
      ++i;
    else if (!(i < s.size() && s[i] >= '1' && s[i] <= '9') || !digits())
      return false;
    if (at('.')) {
      ++i;
      if (!digits()) return false;
    }
    if (at('e') || at('E')) {
      ++i;
      if (at('+') || at('-')) ++i;
      if (!digits()) return false;
    }
    return true;
  }
  bool string()
  {
    ++i;    // opening quote
    while (i < s.size()) {
      const unsigned char c = static_cast<unsigned char>(s[i++]);
      if (c == '"') return true;
      if (c < 0x20) return false;
      if (c == '\\') {
        if (i >= s.size()) return false;
        const char e = s[i++];
        if (e == 'u') {
          for (int k = 0; k < 4; ++k, ++i)
            if (i >= s.size() || !std::isxdigit(static_cast<unsigned char>(s[i]))) return false;
        } else if (!std::strchr("\"\\/bfnrt", e) || e == '\0') {
          return false;
        }
      }
    }
    return false;
  }
  bool value(int depth)
  {
    if (depth > 500 || i >= s.size()) return false;
    const char c = s[i];
    if (c == '{' || c == '[') {
      const char close = c == '{' ? '}' : ']';
      ++i;
      skip_ws();
      if (at(close)) return ++i, true;
      while (true) {
        if (c == '{') {
          if (!at('"') || !string()) return false;
          skip_ws();
          if (!at(':')) return false;
          ++i;
          skip_ws();
        }
        if (!value(depth + 1)) return false;
        skip_ws();
        if (at(close)) return ++i, true;
        if (!at(',')) return false;
        ++i;
        skip_ws();
      }
    }
    if (c == '"') return string();
    if (c == 't') return literal("true");
    if (c == 'f') return literal("false");
    if (c == 'n') return literal("null");
    return number();
  }
};

}    // namespace

bool is_json(const std::string &text)
{
  return JsonChecker(text).document();
}

}    // namespace mdpot
