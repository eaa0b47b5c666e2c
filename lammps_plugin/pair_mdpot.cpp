/* ----------------------------------------------------------------------
   mdpot: LAMMPS pair style for deployed mdpot models.

   The model contract (inputs, outputs, metadata, sign conventions) is docs/contract.md; this file is
   the LAMMPS side of it. Edges are built from a full neighbour list with zero shifts (ghost atoms sit at
   their image positions); forces on ghosts are summed to their owners by LAMMPS's reverse
   communication, which is why newton pair must be on.
------------------------------------------------------------------------- */

#include "pair_mdpot.h"

#include "atom.h"
#include "comm.h"
#include "domain.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "platform.h"
#include "update.h"
#include "utils.h"

#include <torch/cuda.h>
#include <torch/script.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <ATen/Parallel.h>

#include <mpi.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <stdexcept>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <thread>
#include <vector>

using namespace LAMMPS_NS;

namespace {

// The metadata version this build understands (docs/contract.md, `mdpot_format_version`).
constexpr const char *SUPPORTED_FORMAT_VERSION = "1";

// Every metadata key of the contract; a model missing any of them is refused.
const char *const METADATA_KEYS[] = {
    "mdpot_format_version", "architecture",  "elements",      "r_max",
    "num_layers",           "receptive_field", "model_dtype", "energy_units",
    "length_units",         "torch_version", "mdpot_version", "provenance",
    "config",               "weights_sha256"};

// Memory of one model call grows with its edges (about 10 KB per edge for the benchmark Allegro in
// float32, autograd buffers included); strictly local models are evaluated in chunks of centre atoms of
// at most this many edges, so large systems fit in memory at the same cost per atom.
constexpr long DEFAULT_MAX_EDGES = 400000;

// Atoms closer than this (Å) are reported as overlapping (same threshold as the ASE calculator).
constexpr double OVERLAP_DISTANCE = 0.01;

// c10::Error::what() carries a C++ backtrace that buries the message; keep only the message.
std::string torch_message(const std::exception &e)
{
  if (auto err = dynamic_cast<const c10::Error *>(&e)) return err->what_without_backtrace();
  return e.what();
}

std::string trim(const std::string &s)
{
  const char *ws = " \t\r\n";
  auto b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

std::vector<std::string> split_words(const std::string &s)
{
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (std::isspace(static_cast<unsigned char>(c))) {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

std::string join(const std::vector<std::string> &words, const char *sep = " ")
{
  std::string out;
  for (size_t k = 0; k < words.size(); ++k) out += (k ? sep : "") + words[k];
  return out;
}

std::string shape_str(const torch::Tensor &t)
{
  std::vector<std::string> dims;
  for (auto s : t.sizes()) dims.push_back(std::to_string(s));
  return "[" + join(dims, ", ") + "]";
}

// Loading compiles the model's TorchScript code (about a second per rank), and its first calls are
// profiled and optimised. Input scripts that `clear` and set the pair style again (loops over systems,
// restarts) reuse the module of an unchanged file instead. A few entries, freed at exit.
struct LoadedFile {
  std::string path;
  std::string device;
  std::filesystem::file_time_type mtime;
  std::uintmax_t size;
  torch::jit::script::Module module;
  torch::jit::ExtraFilesMap extra;
};

std::vector<LoadedFile> &loaded_files()
{
  static std::vector<LoadedFile> files;
  return files;
}

const LoadedFile *find_loaded(const std::string &path, const torch::Device &device)
{
  std::error_code ec;
  const auto mtime = std::filesystem::last_write_time(path, ec);
  if (ec) return nullptr;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) return nullptr;
  for (const auto &f : loaded_files())
    if (f.path == path && f.device == device.str() && f.mtime == mtime && f.size == size) return &f;
  return nullptr;
}

void remember_loaded(const std::string &path, const torch::Device &device,
                     const torch::jit::script::Module &module, const torch::jit::ExtraFilesMap &extra)
{
  std::error_code ec;
  LoadedFile f{path, device.str(), std::filesystem::last_write_time(path, ec), 0, module, extra};
  f.size = std::filesystem::file_size(path, ec);
  if (ec) return;
  auto &files = loaded_files();
  files.erase(std::remove_if(files.begin(), files.end(), [&](const LoadedFile &o) { return o.path == path; }),
              files.end());
  if (files.size() >= 4) files.erase(files.begin());
  files.push_back(std::move(f));
}

// Each model call allocates and frees hundreds of MB of temporaries. glibc returns blocks above its mmap
// threshold to the OS on free, so every step page-faults its whole working set again and the cost per
// atom grows with system size (mdpot/_malloc.py has the numbers). Keep freed memory in the heap instead.
void tune_malloc()
{
#if defined(__GLIBC__)
  const char *env = std::getenv("MDPOT_MALLOC_TUNING");
  if (env && std::string(env) == "0") return;
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 0x7fffffff);
  mallopt(M_TOP_PAD, 1 << 28);
#endif
}

// Adds a row-major 3x3 virial to a LAMMPS Voigt vector (xx yy zz xy xz yz), symmetrising the
// off-diagonals.
void add_voigt(double *v, const double *w)
{
  v[0] += w[0];
  v[1] += w[4];
  v[2] += w[8];
  v[3] += 0.5 * (w[1] + w[3]);
  v[4] += 0.5 * (w[2] + w[6]);
  v[5] += 0.5 * (w[5] + w[7]);
}

}    // namespace

namespace LAMMPS_NS {

// Everything that touches torch. Host buffers are reused across steps to avoid re-allocation.
struct MDPotImpl {
  torch::jit::script::Module model;
  torch::Device device{torch::kCPU};
  bool loaded = false;
  int local_rank = 0, local_size = 1;
  std::map<std::string, std::string> metadata;

  // packed inputs: compact atoms are [local atoms of mapped types..., ghosts that are used...]
  std::vector<double> pos;            // [n_atoms * 3], Å
  std::vector<int64_t> atom_type;     // [n_atoms], model type index
  std::vector<int64_t> edge_index;    // [2 * n_edges]: centres then neighbours
  std::vector<int64_t> edge_j;        // neighbours while packing
  std::vector<int> lmp_index;         // compact -> LAMMPS atom index
  std::vector<int> compact;           // LAMMPS atom index -> compact, -1 if absent
  int n_local = 0;
  int64_t n_edges = 0;
  bool want_atom_virial = false;

  // outputs on the host, float64 contiguous
  torch::Tensor atom_energy, forces, virial, atom_virial;

  // what this rank evaluated since the run started, reported by finish(): the price of ghost shells
  struct Stats {
    double steps = 0, calls = 0, local_atoms = 0, ghost_atoms = 0, local_edges = 0, ghost_edges = 0,
           model_seconds = 0;
  } stats;
  int64_t n_local_edges = 0;    // edges of the last pack whose centre is a local atom
  std::vector<int> hop;         // message passing: hops from the nearest local atom (capped)
};

}    // namespace LAMMPS_NS

/* ---------------------------------------------------------------------- */

PairMDPot::PairMDPot(LAMMPS *lmp) :
    Pair(lmp), device_choice(DeviceChoice::AUTO), num_threads(0), jit_optimize(false), max_edges(DEFAULT_MAX_EDGES), max_edges_given(false), impl(new MDPotImpl), r_max(0.0),
    receptive_field(0.0), ghost_centres(false), max_hops(0)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  no_virial_fdotr_compute = 1;    // the model returns the virial; f.r over ghosts would double count
  centroidstressflag = CENTROID_NOTAVAIL;
}

PairMDPot::~PairMDPot()
{
  if (copymode) return;
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
    memory->destroy(cutghost);
  }
}

void PairMDPot::allocate()
{
  allocated = 1;
  const int n = atom->ntypes;
  memory->create(setflag, n + 1, n + 1, "pair:setflag");
  memory->create(cutsq, n + 1, n + 1, "pair:cutsq");
  memory->create(cutghost, n + 1, n + 1, "pair:cutghost");
  for (int i = 0; i <= n; ++i)
    for (int j = 0; j <= n; ++j) setflag[i][j] = 0;
}

/* ----------------------------------------------------------------------
   pair_style mdpot [device cpu|cuda|auto] [threads N|auto] [jit_optimize yes|no] [max_edges N]
                    [dump_edges FILE]
   jit_optimize: TorchScript's profiling graph executor (default no).
   max_edges: edges per model call for strictly local models (chunks of centre atoms; exact).
   dump_edges is a debugging aid: every compute() overwrites FILE.<rank> with the edges it built
   (one '#' header per chunk).
------------------------------------------------------------------------- */

void PairMDPot::settings(int narg, char **arg)
{
  device_choice = DeviceChoice::AUTO;
  num_threads = 0;
  edge_file.clear();
  jit_optimize = false;
  max_edges = DEFAULT_MAX_EDGES;
  max_edges_given = false;
  int iarg = 0;
  while (iarg < narg) {
    const std::string key = arg[iarg];
    if (iarg + 1 >= narg) error->all(FLERR, "pair_style mdpot: keyword '{}' needs a value", key);
    const std::string value = arg[iarg + 1];
    if (key == "device") {
      if (value == "cpu")
        device_choice = DeviceChoice::CPU;
      else if (value == "cuda")
        device_choice = DeviceChoice::CUDA;
      else if (value == "auto")
        device_choice = DeviceChoice::AUTO;
      else
        error->all(FLERR, "pair_style mdpot: device must be cpu, cuda or auto, got '{}'", value);
    } else if (key == "threads") {
      if (value == "auto") {
        num_threads = 0;
      } else {
        char *end = nullptr;
        long n = std::strtol(value.c_str(), &end, 10);
        if (end == value.c_str() || *end != '\0' || n < 1)
          error->all(FLERR, "pair_style mdpot: threads must be a positive integer or auto, got '{}'",
                     value);
        num_threads = static_cast<int>(n);
      }
    } else if (key == "max_edges") {
      char *end = nullptr;
      long n = std::strtol(value.c_str(), &end, 10);
      if (end == value.c_str() || *end != '\0' || n < 1)
        error->all(FLERR, "pair_style mdpot: max_edges must be a positive integer, got '{}'", value);
      max_edges = n;
      max_edges_given = true;
    } else if (key == "dump_edges") {
      edge_file = value;
    } else if (key == "jit_optimize") {
      if (value != "yes" && value != "no")
        error->all(FLERR, "pair_style mdpot: jit_optimize must be yes or no, got '{}'", value);
      jit_optimize = value == "yes";
    } else {
      error->all(FLERR, "pair_style mdpot: unknown keyword '{}' (known: device, threads, jit_optimize, max_edges, dump_edges)",
                 key);
    }
    iarg += 2;
  }
}

/* ----------------------------------------------------------------------
   pair_coeff * * model.pt El1 El2 ... (one element or NULL per LAMMPS type)
------------------------------------------------------------------------- */

void PairMDPot::coeff(int narg, char **arg)
{
  if (!allocated) allocate();
  const int ntypes = atom->ntypes;
  if (narg != 3 + ntypes)
    error->all(FLERR,
               "pair_coeff for mdpot: expected '* * model.pt' and {} element names (one per atom "
               "type), got {} arguments",
               ntypes, narg);
  if (strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "pair_coeff for mdpot must start with '* *', got '{} {}'", arg[0], arg[1]);

  select_device();
  set_threads();
  tune_malloc();
  load_model(arg[2]);
  map_types(narg - 3, arg + 3);
}

// Collective: every rank learns its node-local rank, so one GPU per rank can be picked.
void PairMDPot::select_device()
{
  MPI_Comm node;
  MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, comm->me, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &impl->local_rank);
  MPI_Comm_size(node, &impl->local_size);
  MPI_Comm_free(&node);

  bool cuda = false;
  try {
    cuda = torch::cuda::is_available();
  } catch (const std::exception &e) {
    if (device_choice == DeviceChoice::CUDA)
      error->all(FLERR, "pair_style mdpot: cannot query CUDA: {}", torch_message(e));
  }
  if (device_choice == DeviceChoice::CUDA && !cuda)
    error->all(FLERR,
               "pair_style mdpot: device cuda requested, but this torch build has no CUDA or no GPU "
               "is visible (use 'device cpu' or 'device auto')");

  if (device_choice == DeviceChoice::CPU || !cuda) {
    impl->device = torch::Device(torch::kCPU);
  } else {
    const int ngpu = static_cast<int>(torch::cuda::device_count());
    impl->device = torch::Device(torch::kCUDA, impl->local_rank % ngpu);
  }
}

// Torch's OpenMP pool is separate from LAMMPS's: without this every rank would use every core.
void PairMDPot::set_threads()
{
  int n = num_threads;
  if (n == 0) {
    if (std::getenv("OMP_NUM_THREADS")) return;    // torch already honours it
    const int cores = static_cast<int>(std::thread::hardware_concurrency());
    n = std::max(1, cores / std::max(1, impl->local_size));
  }
  at::set_num_threads(n);
}

void PairMDPot::load_model(const std::string &path)
{
  namespace fs = std::filesystem;
  std::error_code ec;
  const std::string resolved = fs::absolute(fs::path(path), ec).lexically_normal().string();
  if (!fs::is_regular_file(path, ec))
    error->all(FLERR, "pair_coeff for mdpot: model file '{}' not found (resolved path: {})", path,
               resolved);

  torch::jit::ExtraFilesMap extra;
  const LoadedFile *cached = find_loaded(resolved, impl->device);
  if (cached) {
    impl->model = cached->module;
    extra = cached->extra;
  } else {
    for (const char *key : METADATA_KEYS) extra[key] = "";
    try {
      impl->model = torch::jit::load(resolved, impl->device, extra);
      impl->model.eval();
    } catch (const std::exception &e) {
      error->all(FLERR, "pair_coeff for mdpot: cannot read '{}' as a TorchScript model: {}", resolved,
                 torch_message(e));
    }
  }

  std::vector<std::string> missing;
  impl->metadata.clear();
  for (const char *key : METADATA_KEYS) {
    const std::string value = trim(extra[key]);
    if (value.empty()) missing.emplace_back(key);
    impl->metadata[key] = value;
  }
  if (!missing.empty())
    error->all(FLERR, "pair_coeff for mdpot: '{}' is not an mdpot model: missing metadata keys: {}",
               resolved, join(missing, ", "));
  auto &meta = impl->metadata;
  if (meta["mdpot_format_version"] != SUPPORTED_FORMAT_VERSION)
    error->all(FLERR,
               "pair_coeff for mdpot: '{}' has mdpot_format_version '{}', this plugin reads only "
               "version {} (rebuild the plugin from a matching mdpot)",
               resolved, meta["mdpot_format_version"], SUPPORTED_FORMAT_VERSION);

  auto number = [&](const char *key) {
    const std::string &text = meta[key];
    char *end = nullptr;
    double v = std::strtod(text.c_str(), &end);
    if (end == text.c_str() || *end != '\0' || !std::isfinite(v) || v <= 0.0)
      error->all(FLERR, "pair_coeff for mdpot: metadata '{}' in '{}' must be a positive number, got '{}'",
                 key, resolved, text);
    return v;
  };
  r_max = number("r_max");
  receptive_field = number("receptive_field");
  number("num_layers");
  if (receptive_field < r_max)
    error->all(FLERR, "pair_coeff for mdpot: receptive_field {} < r_max {} in '{}'", receptive_field,
               r_max, resolved);
  ghost_centres = receptive_field > r_max;
  // layers of message passing beyond the first: how many hops out centres still matter
  max_hops = ghost_centres ? static_cast<int>(std::ceil(receptive_field / r_max - 1e-9)) - 1 : 0;
  ghostneigh = ghost_centres ? 1 : 0;

  if (meta["energy_units"] != "eV")
    error->all(FLERR, "pair_coeff for mdpot: model energy_units '{}' in '{}'; only eV is supported",
               meta["energy_units"], resolved);
  const std::string &lu = meta["length_units"];
  if (lu != "Å" && lu != "A" && lu != "Angstrom" && lu != "angstrom")
    error->all(FLERR, "pair_coeff for mdpot: model length_units '{}' in '{}'; only Å is supported", lu,
               resolved);

  if (meta["model_dtype"] != "float32" && meta["model_dtype"] != "float64")
    error->all(FLERR, "pair_coeff for mdpot: model_dtype '{}' in '{}' is not float32 or float64",
               meta["model_dtype"], resolved);
  model_elements = split_words(meta["elements"]);
  model_path = resolved;
  impl->loaded = true;
  if (!cached) remember_loaded(resolved, impl->device, impl->model, extra);

  // Compare release numbers only: "+cpu"/"+cu126" builds read each other's TorchScript files.
  auto release = [](const std::string &v) { return v.substr(0, v.find('+')); };
  if (comm->me == 0 && release(meta["torch_version"]) != release(MDPOT_TORCH_VERSION))
    error->warning(FLERR, "mdpot model '{}' was compiled with torch {}, this plugin uses torch {}",
                   resolved, meta["torch_version"], MDPOT_TORCH_VERSION);
}

void PairMDPot::map_types(int nelem, char **names)
{
  const int ntypes = atom->ntypes;
  const bool hybrid = force->pair_style && utils::strmatch(force->pair_style, "^hybrid");
  type_to_model.assign(ntypes + 1, -1);
  for (int t = 1; t <= ntypes; ++t) {
    const std::string el = names[t - 1];
    if (el == "NULL") {
      if (!hybrid)
        error->all(FLERR,
                   "pair_coeff for mdpot: NULL for LAMMPS type {} is only allowed under pair_style "
                   "hybrid or hybrid/overlay",
                   t);
      continue;
    }
    auto it = std::find(model_elements.begin(), model_elements.end(), el);
    if (it == model_elements.end())
      error->all(FLERR,
                 "pair_coeff for mdpot: element '{}' for LAMMPS type {} is not in model '{}' (model "
                 "elements: {})",
                 el, t, model_path, join(model_elements));
    type_to_model[t] = static_cast<int>(it - model_elements.begin());
  }

  int count = 0;
  for (int i = 1; i <= ntypes; ++i)
    for (int j = i; j <= ntypes; ++j) {
      setflag[i][j] = (type_to_model[i] >= 0 && type_to_model[j] >= 0) ? 1 : 0;
      count += setflag[i][j];
    }
  if (count == 0) error->all(FLERR, "pair_coeff for mdpot: every atom type is NULL");

  if (comm->me == 0) {
    auto &meta = impl->metadata;
    std::string msg = fmt::format(
        "mdpot: model {} ({}, elements: {}, r_max {} Å, receptive field {} Å, {}) on {}, {} torch "
        "thread(s) per rank\n",
        model_path, meta["architecture"], meta["elements"], r_max, receptive_field,
        meta["model_dtype"], impl->device.str(), at::get_num_threads());
    for (int t = 1; t <= ntypes; ++t) {
      if (type_to_model[t] < 0)
        msg += fmt::format("mdpot:   type {} -> NULL (not handled by mdpot)\n", t);
      else
        msg += fmt::format("mdpot:   type {} -> {} (model index {})\n", t,
                           model_elements[type_to_model[t]], type_to_model[t]);
    }
    utils::logmesg(lmp, msg);
  }
}

/* ---------------------------------------------------------------------- */

void PairMDPot::init_style()
{
  if (!impl->loaded) error->all(FLERR, "pair style mdpot: pair_coeff * * model.pt ... is not set");
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR, "pair style mdpot requires 'units metal' (the model uses eV and Å), got 'units {}'",
               update->unit_style);
  if (domain->dimension != 3) error->all(FLERR, "pair style mdpot requires a 3d system");
  if (atom->tag_enable == 0)
    error->all(FLERR, "pair style mdpot requires atom IDs (atom_modify id yes)");
  if (force->newton_pair == 0)
    error->all(FLERR,
               "pair style mdpot requires 'newton on' (newton pair on): forces on ghost atoms are "
               "returned to their owners by reverse communication");

  // Before the run's first neighbour build: binning a NaN coordinate is undefined behaviour.
  check_finite_positions("setup");

  int flags = NeighConst::REQ_FULL;
  if (ghost_centres) flags |= NeighConst::REQ_GHOST;
  neighbor->add_request(this, flags);

  // A message-passing model needs every atom within its receptive field, for the whole neighbour
  // list lifetime (atoms move up to half a skin each way between rebuilds).
  if (ghost_centres) {
    const double needed = receptive_field + neighbor->skin;
    if (comm->mode != Comm::SINGLE)
      error->all(FLERR,
                 "pair style mdpot: model '{}' passes messages and needs a ghost cutoff of {} Å (receptive "
                 "field {} Å + skin {} Å) for every atom; comm_modify mode multi sets ghost cutoffs per "
                 "collection: use comm_modify mode single",
                 model_path, needed, receptive_field, neighbor->skin);
    if (comm->cutghostuser < needed) {
      comm->cutghostuser = needed;
      if (comm->me == 0)
        utils::logmesg(lmp, "mdpot: ghost cutoff raised to {} Å (receptive field + skin)\n", needed);
    }
    if (max_edges_given && comm->me == 0)
      error->warning(FLERR,
                     "pair mdpot: max_edges {} is ignored: the model passes messages (receptive field {} Å > "
                     "r_max {} Å), so each rank evaluates all its atoms in one call",
                     max_edges, receptive_field, r_max);
  }
}

// End of a run: what the model evaluated per step, summed over ranks. For a message-passing model the
// ghost atoms and ghost-centred edges are the redundant work of the wide ghost shell.
void PairMDPot::finish()
{
  auto &st = impl->stats;
  double sums[5] = {st.local_atoms, st.ghost_atoms, st.local_edges, st.ghost_edges, st.calls};
  double totals[5];
  MPI_Allreduce(sums, totals, 5, MPI_DOUBLE, MPI_SUM, world);
  double model_max = 0.0;
  MPI_Allreduce(&st.model_seconds, &model_max, 1, MPI_DOUBLE, MPI_MAX, world);
  if (comm->me == 0 && st.steps > 0) {
    const double steps = st.steps, local = totals[0] / steps, ghosts = totals[1] / steps;
    const double ledges = totals[2] / steps, gedges = totals[3] / steps;
    utils::logmesg(lmp,
                   "mdpot stats: steps={:.0f} model_calls_per_step={:.2f} local_atoms={:.0f} ghost_atoms={:.0f} "
                   "local_edges={:.0f} ghost_edges={:.0f} ghost_atoms_per_local={:.3f} "
                   "ghost_edges_per_local={:.3f} ghost_edge_share={:.4f} model_seconds_per_step={:.6g}\n",
                   steps, totals[4] / steps, local, ghosts, ledges, gedges, local > 0 ? ghosts / local : 0.0,
                   local > 0 ? gedges / local : 0.0, ledges + gedges > 0 ? gedges / (ledges + gedges) : 0.0,
                   model_max / steps);
  }
  st = MDPotImpl::Stats();
}

double PairMDPot::init_one(int i, int j)
{
  if (ghost_centres) cutghost[i][j] = cutghost[j][i] = r_max;
  return r_max;
}

/* ---------------------------------------------------------------------- */

void PairMDPot::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  check_finite_positions("step");
  // Strictly local models: energies are sums over centre atoms, so chunks of centres are exact.
  int next = 0, chunk = 0;
  impl->stats.steps += 1;
  do {
    next = pack_inputs(next);
    if (!edge_file.empty()) dump_edges(chunk++);
    const double t0 = platform::walltime();
    run_model(vflag_atom);
    tally_stats(platform::walltime() - t0);
    check_finite_outputs();
    scatter_forces();
    if (eflag_either) tally_energy();
    if (vflag_global) tally_virial();
    if (vflag_atom) tally_atom_virial();
  } while (next < list->inum);
}

// What one model call evaluated, for the end-of-run statistics of finish().
void PairMDPot::tally_stats(double model_seconds)
{
  auto &d = *impl;
  auto &st = d.stats;
  st.model_seconds += model_seconds;
  st.calls += 1;
  st.local_atoms += d.n_local;
  st.ghost_atoms += static_cast<double>(d.lmp_index.size()) - d.n_local;
  st.local_edges += static_cast<double>(d.n_local_edges);
  st.ghost_edges += static_cast<double>(d.n_edges - d.n_local_edges);
}

void PairMDPot::check_finite_positions(const char *when)
{
  double **x = atom->x;
  const int nlocal = atom->nlocal;
  std::vector<tagint> bad;
  for (int i = 0; i < nlocal; ++i)
    if (!std::isfinite(x[i][0]) || !std::isfinite(x[i][1]) || !std::isfinite(x[i][2]))
      if (bad.size() < 10) bad.push_back(atom->tag[i]);
  if (!bad.empty()) {
    std::vector<std::string> ids;
    for (auto t : bad) ids.push_back(std::to_string(t));
    error->one(FLERR, "pair mdpot: non-finite positions at {} of step {} for atom IDs {}", when,
               update->ntimestep, join(ids, ", "));
  }
}

// Compact atom list for the centres list->ilist[first_centre .. end): those centres first (their energies
// count), then every other atom an edge uses. Returns `end`. A message-passing model takes every centre,
// ghosts included, in one call.
int PairMDPot::pack_inputs(int first_centre)
{
  auto &d = *impl;
  double **x = atom->x;
  const int *type = atom->type;
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  const double cutsq_model = r_max * r_max;
  const double overlapsq = OVERLAP_DISTANCE * OVERLAP_DISTANCE;

  d.compact.assign(nall, -1);
  d.lmp_index.clear();
  d.pos.clear();
  d.atom_type.clear();
  auto add_atom = [&](int i) {
    d.compact[i] = static_cast<int>(d.lmp_index.size());
    d.lmp_index.push_back(i);
    d.pos.insert(d.pos.end(), {x[i][0], x[i][1], x[i][2]});
    d.atom_type.push_back(type_to_model[type[i]]);
  };
  int end = list->inum;
  if (!ghost_centres && first_centre < list->inum) {
    // numneigh counts the skin too: an upper bound on the edges, good enough to bound memory
    long edges = 0;
    end = first_centre;
    while (end < list->inum && (end == first_centre || edges + list->numneigh[list->ilist[end]] <= max_edges))
      edges += list->numneigh[list->ilist[end++]];
  }
  for (int ii = first_centre; ii < end; ++ii) {
    const int i = list->ilist[ii];
    if (type_to_model[type[i]] >= 0) add_atom(i);
  }
  d.n_local = static_cast<int>(d.lmp_index.size());

  d.edge_index.clear();
  d.edge_j.clear();
  const int ncentres = ghost_centres ? list->inum + list->gnum : end;
  if (ghost_centres) mark_message_hops();
  // ilist holds local centres first, then ghosts: the edges packed before the first ghost are local
  d.n_local_edges = -1;
  for (int ii = first_centre; ii < ncentres; ++ii) {
    if (ii == list->inum) d.n_local_edges = static_cast<int64_t>(d.edge_j.size());
    const int i = list->ilist[ii];
    if (type_to_model[type[i]] < 0) continue;
    if (ghost_centres && d.hop[i] > max_hops) continue;
    const int *jlist = list->firstneigh[i];
    const int jnum = list->numneigh[i];
    for (int jj = 0; jj < jnum; ++jj) {
      const int j = jlist[jj] & NEIGHMASK;
      if (type_to_model[type[j]] < 0) continue;
      const double dx = x[j][0] - x[i][0], dy = x[j][1] - x[i][1], dz = x[j][2] - x[i][2];
      const double rsq = dx * dx + dy * dy + dz * dz;
      if (rsq >= cutsq_model) continue;
      if (rsq < overlapsq)
        error->one(FLERR, "pair mdpot: atoms {} and {} overlap (distance {:.3g} Å < {} Å) on step {}",
                   std::min(atom->tag[i], atom->tag[j]), std::max(atom->tag[i], atom->tag[j]),
                   std::sqrt(rsq), OVERLAP_DISTANCE, update->ntimestep);
      if (d.compact[i] < 0) add_atom(i);
      if (d.compact[j] < 0) add_atom(j);
      d.edge_index.push_back(d.compact[i]);
      d.edge_j.push_back(d.compact[j]);
    }
  }
  d.n_edges = static_cast<int64_t>(d.edge_j.size());
  if (d.n_local_edges < 0) d.n_local_edges = d.n_edges;
  d.edge_index.insert(d.edge_index.end(), d.edge_j.begin(), d.edge_j.end());
  return end;
}

// Message passing over L layers: an atom k hops from the nearest local atom contributes to local energies
// only through its features after layers 1..L-k, so only atoms at most L-1 hops away need the edges
// centred on them; atoms L hops away enter with their embedding alone. Breadth-first search over the
// full neighbour list (ghosts included, edges shorter than r_max) marks every atom's hop count, capped at
// max_hops + 1. The ghost shell of L r_max + skin makes every neighbour list searched here complete.
void PairMDPot::mark_message_hops()
{
  auto &d = *impl;
  double **x = atom->x;
  const int *type = atom->type;
  const int nall = atom->nlocal + atom->nghost;
  const double cutsq_model = r_max * r_max;
  d.hop.assign(nall, max_hops + 1);
  std::vector<int> frontier, next;
  for (int ii = 0; ii < list->inum; ++ii) {
    const int i = list->ilist[ii];
    if (type_to_model[type[i]] < 0) continue;
    d.hop[i] = 0;
    frontier.push_back(i);
  }
  for (int k = 1; k <= max_hops && !frontier.empty(); ++k) {
    next.clear();
    for (const int i : frontier) {
      const int *jlist = list->firstneigh[i];
      const int jnum = list->numneigh[i];
      for (int jj = 0; jj < jnum; ++jj) {
        const int j = jlist[jj] & NEIGHMASK;
        if (d.hop[j] <= k || type_to_model[type[j]] < 0) continue;
        const double dx = x[j][0] - x[i][0], dy = x[j][1] - x[i][1], dz = x[j][2] - x[i][2];
        if (dx * dx + dy * dy + dz * dz >= cutsq_model) continue;
        d.hop[j] = k;
        next.push_back(j);
      }
    }
    frontier.swap(next);
  }
}

// One line per edge: tag_i tag_j, r_ij = x_j - x_i (Å) as the model receives them, and 1 if the centre is
// one of this call's local centres (0: a ghost centre, which only message-passing models use).
void PairMDPot::dump_edges(int chunk)
{
  auto &d = *impl;
  const std::string path = fmt::format("{}.{}", edge_file, comm->me);
  FILE *fp = fopen(path.c_str(), chunk == 0 ? "w" : "a");
  if (!fp) error->one(FLERR, "pair mdpot: cannot open dump_edges file '{}': {}", path, utils::getsyserror());
  double **x = atom->x;
  utils::print(fp, "# step {} rank {} n_local {} n_atoms {} n_edges {}\n", update->ntimestep, comm->me,
               d.n_local, d.lmp_index.size(), d.n_edges);
  for (int64_t e = 0; e < d.n_edges; ++e) {
    const int i = d.lmp_index[d.edge_index[e]], j = d.lmp_index[d.edge_index[d.n_edges + e]];
    utils::print(fp, "{} {} {:.17g} {:.17g} {:.17g} {}\n", atom->tag[i], atom->tag[j], x[j][0] - x[i][0],
                 x[j][1] - x[i][1], x[j][2] - x[i][2], d.edge_index[e] < d.n_local ? 1 : 0);
  }
  fclose(fp);
}

void PairMDPot::run_model(int vflag_atom_now)
{
  auto &d = *impl;
  const int64_t n = static_cast<int64_t>(d.lmp_index.size());
  d.want_atom_virial = vflag_atom_now != 0;
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  auto i64 = torch::TensorOptions().dtype(torch::kInt64);
  if (n == 0) {    // a rank without atoms of our types has nothing to evaluate
    d.atom_energy = torch::zeros({0}, f64);
    d.forces = torch::zeros({0, 3}, f64);
    d.virial = torch::zeros({3, 3}, f64);
    d.atom_virial = torch::zeros({0, 3, 3}, f64);
    return;
  }

  size_t n_outputs = 0;
  try {
    auto pos = torch::from_blob(d.pos.data(), {n, 3}, f64).to(d.device);
    auto types = torch::from_blob(d.atom_type.data(), {n}, i64).to(d.device);
    auto edges = torch::from_blob(d.edge_index.data(), {2, d.n_edges}, i64).to(d.device);
    auto shifts = torch::zeros({d.n_edges, 3}, f64.device(d.device));
    std::vector<torch::jit::IValue> inputs{pos,
                                           types,
                                           edges,
                                           shifts,
                                           static_cast<int64_t>(d.n_local),
                                           d.want_atom_virial};
    // The profiling executor re-specialises whenever the atom/edge counts change and, on CPU, its
    // optimised graphs measured slower than the plain ones; it stays off unless asked for.
    torch::jit::GraphOptimizerEnabledGuard optimize(jit_optimize);
    auto out = d.model.forward(inputs).toTuple();
    const auto &el = out->elements();
    n_outputs = el.size();
    if (n_outputs != 4) throw std::runtime_error("wrong number of outputs");
    auto host = [](const torch::jit::IValue &v) {
      return v.toTensor().to(torch::kCPU, torch::kFloat64).contiguous();
    };
    d.atom_energy = host(el[0]);
    d.forces = host(el[1]);
    d.virial = host(el[2]);
    d.atom_virial = host(el[3]);
  } catch (const std::exception &e) {
    if (n_outputs != 4 && n_outputs != 0)
      error->one(FLERR, "pair mdpot: model returned {} outputs, the contract has 4", n_outputs);
    error->one(FLERR, "pair mdpot: model evaluation failed on step {} ({} atoms, {} edges): {}",
               update->ntimestep, n, d.n_edges, torch_message(e));
  }

  auto shape_is = [](const torch::Tensor &t, std::vector<int64_t> s) { return t.sizes().vec() == s; };
  if (!shape_is(d.atom_energy, {d.n_local}) || !shape_is(d.forces, {n, 3}) ||
      !shape_is(d.virial, {3, 3}) || (d.want_atom_virial && !shape_is(d.atom_virial, {n, 3, 3})))
    error->one(FLERR,
               "pair mdpot: model output shapes atom_energy {} forces {} virial {} atom_virial {} do "
               "not match the contract for {} local / {} total atoms",
               shape_str(d.atom_energy), shape_str(d.forces), shape_str(d.virial),
               shape_str(d.atom_virial),
               d.n_local, n);
}

void PairMDPot::check_finite_outputs()
{
  auto &d = *impl;
  const double *fk = d.forces.data_ptr<double>();
  const double *ek = d.atom_energy.data_ptr<double>();
  const int64_t n = static_cast<int64_t>(d.lmp_index.size());
  std::vector<std::string> ids;
  for (int64_t k = 0; k < n && ids.size() < 10; ++k) {
    bool ok = std::isfinite(fk[3 * k]) && std::isfinite(fk[3 * k + 1]) && std::isfinite(fk[3 * k + 2]);
    if (k < d.n_local) ok = ok && std::isfinite(ek[k]);
    if (!ok) ids.push_back(std::to_string(atom->tag[d.lmp_index[k]]));
  }
  const double *w = d.virial.data_ptr<double>();
  bool virial_ok = true;
  for (int c = 0; c < 9; ++c) virial_ok = virial_ok && std::isfinite(w[c]);
  if (!ids.empty() || !virial_ok)
    error->one(FLERR, "pair mdpot: model returned non-finite energy/forces/virial on step {} for atom IDs {}",
               update->ntimestep, ids.empty() ? std::string("(virial only)") : join(ids, ", "));
}

// Forces on ghosts go to the ghost slots; reverse communication adds them to the owners.
void PairMDPot::scatter_forces()
{
  auto &d = *impl;
  double **f = atom->f;
  const double *fk = d.forces.data_ptr<double>();
  const size_t n = d.lmp_index.size();
  for (size_t k = 0; k < n; ++k) {
    double *fi = f[d.lmp_index[k]];
    fi[0] += fk[3 * k];
    fi[1] += fk[3 * k + 1];
    fi[2] += fk[3 * k + 2];
  }
}

void PairMDPot::tally_energy()
{
  auto &d = *impl;
  const double *ek = d.atom_energy.data_ptr<double>();
  if (eflag_global)
    for (int k = 0; k < d.n_local; ++k) eng_vdwl += ek[k];
  if (eflag_atom)
    for (int k = 0; k < d.n_local; ++k) eatom[d.lmp_index[k]] += ek[k];
}

void PairMDPot::tally_virial()
{
  add_voigt(virial, impl->virial.data_ptr<double>());
}

void PairMDPot::tally_atom_virial()
{
  auto &d = *impl;
  const double *w = d.atom_virial.data_ptr<double>();
  const size_t n = d.lmp_index.size();
  for (size_t k = 0; k < n; ++k) add_voigt(vatom[d.lmp_index[k]], w + 9 * k);
}
