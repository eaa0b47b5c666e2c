/* ----------------------------------------------------------------------
   mdpot: LAMMPS pair style for deployed mdpot models.

   The model contract (inputs, outputs, metadata, sign conventions) is docs/contract.md; this file is
   the LAMMPS side of it: settings, packing the neighbour list into a graph, communication and tallies.
   The model itself runs in mdpot::Model (mdpot_model.h), which knows nothing of LAMMPS. Edges are built
   from a full neighbour list with zero shifts (ghost atoms sit at their image positions); forces on
   ghosts are summed to their owners by LAMMPS's reverse communication, which is why newton pair must be on.
------------------------------------------------------------------------- */

#include "pair_mdpot.h"

#include "mdpot_contract.h"    // generated from mdpot/contract.py at build time
#include "mdpot_model.h"

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

#include <mpi.h>
#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

using namespace LAMMPS_NS;

namespace {

// Memory of one model call grows with its edges. Calls hold at most max_edges edges (strictly local models: chunks of
// centre atoms; message_passing exchange: chunks of centres per block). max_edges auto (the default) is a budget of
// bytes over the file's bytes_per_edge (measured at deploy, docs/contract.md), within [AUTO_MIN_EDGES,
// AUTO_MAX_EDGES]: CACHE_CHUNK_BYTES for a strictly local model on the CPU (unless max_memory is given), max_memory
// otherwise; a file without that key gets DEFAULT_MAX_EDGES (for the benchmark Allegro in float32, 7.7 kB per edge:
// 400 000 neighbour-list entries with a 2 Å skin are about 140 000 edges, 1 GB).
constexpr long DEFAULT_MAX_EDGES = 400000;
constexpr double DEFAULT_MAX_MEMORY = 2.0 * 1024 * 1024 * 1024;    // bytes per rank: 2 GB
// Calls whose intermediates stay in the CPU's caches instead of streaming through main memory: the model's
// elementwise chains are bound by memory traffic. Measured (docs/benchmarks/cache_chunks.md, 4 000 Cu atoms, 1 rank):
// the benchmark Allegro's AOTI package runs 1.8-1.9x faster and its TorchScript file 1.3x in calls of 2 000-6 000
// neighbour-list entries than in one call per rank; the l_max 2, 64/32-feature Allegro 1.9x (AOTI) and 1.15x.
// Not for message_passing exchange: chunked blocks recompute their forward in the backward pass (slower there).
constexpr double CACHE_CHUNK_BYTES = 32.0 * 1024 * 1024;
constexpr long AUTO_MIN_EDGES = 1000;        // below this, calls cost more in overhead than they save
constexpr long AUTO_MAX_EDGES = 100000000;

// "2GB", "500MB", "1.5GB" (MB = 1024^2 bytes, GB = 1024^3) -> bytes; -1 if not a positive size with a unit.
double parse_memory(const std::string &text)
{
  size_t used = 0;
  double value = 0.0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception &) {
    return -1.0;
  }
  const std::string unit = text.substr(used);
  const double scale = unit == "MB" ? 1024.0 * 1024.0 : unit == "GB" ? 1024.0 * 1024.0 * 1024.0 : 0.0;
  if (scale == 0.0 || !std::isfinite(value) || !(value > 0) || text[0] == ' ' || text[0] == '+') return -1.0;
  return value * scale;
}

constexpr double OVERLAP_DISTANCE = mdpot::contract::OVERLAP_DISTANCE;
constexpr size_t MAX_LISTED_ATOMS = 10;    // atom IDs named in a message about bad atoms

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

template <typename T> double capacity_bytes(const std::vector<T> &v)
{
  return static_cast<double>(v.capacity() * sizeof(T));
}

// This process's peak resident memory since it started, MB (getrusage: kB on Linux, bytes on macOS).
double peak_rss_mb()
{
  struct rusage usage {};
  if (getrusage(RUSAGE_SELF, &usage) != 0) return 0.0;
#ifdef __APPLE__
  return static_cast<double>(usage.ru_maxrss) / (1024.0 * 1024.0);
#else
  return static_cast<double>(usage.ru_maxrss) / 1024.0;
#endif
}

}    // namespace

namespace LAMMPS_NS {

// The model runner and the per-step buffers. Host buffers keep their capacity across steps.
struct MDPotImpl {
  std::unique_ptr<mdpot::Model> model;
  std::unique_ptr<mdpot::MallocTuning> malloc_tuning;
  int local_rank = 0, local_size = 1;

  // packed inputs: compact atoms are [local atoms of mapped types..., ghosts that are used...]
  std::vector<double> pos;            // [n_atoms * 3], Å
  std::vector<int64_t> atom_type;     // [n_atoms], model type index
  std::vector<int64_t> edge_index;    // [2 * n_edges]: centres then neighbours
  std::vector<int64_t> edge_j;        // neighbours while packing
  std::vector<int> lmp_index;         // compact -> LAMMPS atom index
  std::vector<int> compact;           // LAMMPS atom index -> compact, -1 if absent
  int n_local = 0;
  int64_t n_edges = 0;

  mdpot::Outputs out;    // host float64 results of the last call (owned by the model)

  // what this rank evaluated since the run started, reported by finish(): the price of ghost shells
  struct Stats {
    double steps = 0, calls = 0, local_atoms = 0, ghost_atoms = 0, local_edges = 0, ghost_edges = 0,
           model_seconds = 0, comm_bytes = 0, comm_seconds = 0, committee_steps = 0;
  } stats;

  // message_passing exchange: one row of comm width per LAMMPS atom (local and ghost), and the rows
  // handed to the model (compact order)
  std::vector<double> comm_rows, rows;
  int64_t n_local_edges = 0;    // edges of the last pack whose centre is a local atom
  std::vector<int> hop;         // message passing: hops from the nearest local atom (capped)

  // a committee file: each member's energy summed over this rank's local atoms [K], each local atom's energy per
  // member [nlocal][K], and each local atom's force deviation (eV/Å) and energy deviation (eV), 0 for atoms of
  // NULL types, read by fix pair through extract_peratom
  std::vector<double> member_energy, member_atom_energy, force_deviation, energy_deviation;
  // committee first: the spread of the step it was formed on, kept with the atoms' IDs so that it follows them
  // until the next such step: kept_tags [nall] of the local atoms then the ghosts, kept [nall][2] their force and
  // energy deviations (the ghosts' from their owners), the step the per-atom vectors were last matched to the atoms
  std::vector<tagint> kept_tags;
  std::vector<double> kept;
  bigint carried_step = -1;
  double carried_lost = 0;    // atoms whose values were not found by ID (warned once per run)

  // what went wrong on this rank in the step so far; stop_on_faults() reports it from every rank at once
  struct Faults {
    std::vector<tagint> positions;    // local atoms with a non-finite coordinate
    std::vector<tagint> outputs;      // atoms with a non-finite force or energy
    bool virial = false;              // a non-finite virial
    tagint overlap[2] = {0, 0};       // the overlapping pair of smallest IDs (0 0: none)
    double overlap_distance = 0.0;
    std::string rank_error;           // a model call's or an output file's error (it ended this rank's calls)
    void clear()
    {
      positions.clear();
      outputs.clear();
      virial = false;
      overlap[0] = overlap[1] = 0;
      rank_error.clear();
    }
  } faults;
};

}    // namespace LAMMPS_NS

/* ---------------------------------------------------------------------- */

PairMDPot::PairMDPot(LAMMPS *lmp) :
    Pair(lmp), device_choice(DeviceChoice::AUTO), num_threads(0), jit_optimize(false),
    max_edges(DEFAULT_MAX_EDGES), max_edges_given(false), max_memory(DEFAULT_MAX_MEMORY), max_memory_given(false),
    malloc_tuning(true), print_stats(true),
    mp_request(MessagePassing::DEFAULT), impl(new MDPotImpl), r_max(0.0), receptive_field(0.0),
    ghost_centres(false), exchange(false), rows_float32(false), comm_width(0), committee(1), force_deviation_flag(0),
    energy_deviation_flag(0), deviation_step(-1), extra_values{0, 0, 0, 0, 0}, max_hops(0), raised_cutghost(-1.0),
    user_cutghost(0.0)
{
  uncertainty_every = 1;
  uncertainty_every_given = false;
  committee_mode = CommitteeMode::MEAN;
  committee_every = 1;
  committee_given = false;
  uncertainty_halt = 0.0;
  uncertainty_fp = nullptr;
  uncertainty_last_step = -1;
  pvector = extra_values;
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  no_virial_fdotr_compute = 1;    // the model returns the virial; f.r over ghosts would double count
  centroidstressflag = CENTROID_NOTAVAIL;
}

// Gives back what this style changed outside itself: the ghost cutoff (unless the user has set another
// since) and, through MDPotImpl, the malloc tuning.
PairMDPot::~PairMDPot()
{
  if (copymode) return;
  close_uncertainty_file();
  if (comm && raised_cutghost >= 0.0 && comm->cutghostuser == raised_cutghost) comm->cutghostuser = user_cutghost;
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
    memory->destroy(cutghost);
    memory->destroy(map);
  }
  map = nullptr;
  if (elements)
    for (int i = 0; i < nelements; ++i) delete[] elements[i];
  delete[] elements;
  elements = nullptr;
  nelements = 0;
}

void PairMDPot::allocate()
{
  allocated = 1;
  const int n = atom->ntypes;
  memory->create(setflag, n + 1, n + 1, "pair:setflag");
  memory->create(cutsq, n + 1, n + 1, "pair:cutsq");
  memory->create(cutghost, n + 1, n + 1, "pair:cutghost");
  memory->create(map, n + 1, "pair:map");
  for (int i = 0; i <= n; ++i)
    for (int j = 0; j <= n; ++j) setflag[i][j] = 0;
}

/* ----------------------------------------------------------------------
   pair_style mdpot [device cpu|cuda|auto] [threads N|auto] [jit_optimize yes|no] [max_edges N|auto]
                    [max_memory SIZE] [message_passing exchange|ghosts] [malloc_tuning yes|no] [stats yes|no] [dump_edges FILE]
                    [committee mean|first [every N]] [uncertainty_file FILE [every M]] [uncertainty_halt VALUE]
   (pair_mdpot.h). yes/no values take any of LAMMPS's booleans (yes/no, on/off, true/false, 1/0).
------------------------------------------------------------------------- */

void PairMDPot::settings(int narg, char **arg)
{
  device_choice = DeviceChoice::AUTO;
  num_threads = 0;
  edge_file.clear();
  jit_optimize = false;
  max_edges = DEFAULT_MAX_EDGES;
  max_edges_given = false;
  max_memory = DEFAULT_MAX_MEMORY;
  max_memory_given = false;
  malloc_tuning = true;
  print_stats = true;
  mp_request = MessagePassing::DEFAULT;
  close_uncertainty_file();
  uncertainty_path.clear();
  uncertainty_every = 1;
  uncertainty_every_given = false;
  uncertainty_halt = 0.0;
  committee_mode = CommitteeMode::MEAN;
  committee_every = 1;
  committee_given = false;
  // `KEY VALUE every N` at iarg: N, a positive number of steps, or a one-line error naming `what`
  auto every_steps = [&](int iarg, const std::string &missing, const std::string &what) {
    if (iarg + 3 >= narg) error->all(FLERR, "pair mdpot: {} every: the number of steps is missing", missing);
    const std::string steps = arg[iarg + 3];
    if (!utils::is_integer(steps) || utils::bnumeric(FLERR, steps, false, lmp) < 1 ||
        utils::bnumeric(FLERR, steps, false, lmp) > MAXSMALLINT)
      error->all(FLERR, "pair mdpot: {} every must be a positive integer of steps, got '{}'", what, steps);
    return utils::inumeric(FLERR, steps, false, lmp);
  };
  for (int iarg = 0; iarg < narg; iarg += 2) {
    const std::string key = arg[iarg];
    if (iarg + 1 >= narg) error->all(FLERR, "pair mdpot: keyword '{}' needs a value", key);
    const std::string value = arg[iarg + 1];
    if (key == "device") {
      if (value == "cpu")
        device_choice = DeviceChoice::CPU;
      else if (value == "cuda")
        device_choice = DeviceChoice::CUDA;
      else if (value == "auto")
        device_choice = DeviceChoice::AUTO;
      else
        error->all(FLERR, "pair mdpot: device must be cpu, cuda or auto, got '{}'", value);
    } else if (key == "threads") {
      num_threads = value == "auto" ? 0 : utils::inumeric(FLERR, value, false, lmp);
      if (value != "auto" && num_threads < 1)
        error->all(FLERR, "pair mdpot: threads must be a positive integer or auto, got '{}'", value);
    } else if (key == "max_edges") {
      max_edges_given = value != "auto";
      if (max_edges_given) {
        if (!utils::is_integer(value) || utils::bnumeric(FLERR, value, false, lmp) < 1)
          error->all(FLERR, "pair mdpot: max_edges must be a positive integer or auto, got '{}'", value);
        max_edges = static_cast<long>(utils::bnumeric(FLERR, value, false, lmp));
      }
    } else if (key == "max_memory") {
      max_memory = parse_memory(value);
      if (max_memory <= 0)
        error->all(FLERR, "pair mdpot: max_memory must be a positive size in MB or GB (e.g. 2GB, 500MB), got '{}'",
                   value);
      max_memory_given = true;
    } else if (key == "jit_optimize") {
      jit_optimize = utils::logical(FLERR, value, false, lmp) != 0;
    } else if (key == "malloc_tuning") {
      malloc_tuning = utils::logical(FLERR, value, false, lmp) != 0;
    } else if (key == "stats") {
      print_stats = utils::logical(FLERR, value, false, lmp) != 0;
    } else if (key == "dump_edges") {
      edge_file = value;
    } else if (key == "uncertainty_file") {
      uncertainty_path = value;
      if (iarg + 2 < narg && strcmp(arg[iarg + 2], "every") == 0) {
        uncertainty_every = every_steps(iarg, "uncertainty_file " + value, "uncertainty_file");
        uncertainty_every_given = true;
        iarg += 2;
      }
    } else if (key == "committee") {
      committee_given = true;
      const bool every = iarg + 2 < narg && strcmp(arg[iarg + 2], "every") == 0;
      if (value == "mean") {
        committee_mode = CommitteeMode::MEAN;
        if (every)
          error->all(FLERR, "pair mdpot: committee mean evaluates every member on every step; 'every N' goes with "
                            "committee first");
      } else if (value == "first") {
        committee_mode = CommitteeMode::FIRST;
        if (every) {
          committee_every = every_steps(iarg, "committee first", "committee first");
          iarg += 2;
        }
      } else {
        error->all(FLERR, "pair mdpot: committee must be mean or first, got '{}'", value);
      }
    } else if (key == "uncertainty_halt") {
      uncertainty_halt = utils::is_double(value) ? utils::numeric(FLERR, value, false, lmp) : -1.0;
      if (!(uncertainty_halt > 0) || !std::isfinite(uncertainty_halt))
        error->all(FLERR, "pair mdpot: uncertainty_halt must be a positive force deviation in eV/Å, got '{}'", value);
    } else if (key == "message_passing") {
      if (value == "exchange")
        mp_request = MessagePassing::EXCHANGE;
      else if (value == "ghosts")
        mp_request = MessagePassing::GHOSTS;
      else
        error->all(FLERR, "pair mdpot: message_passing must be exchange or ghosts, got '{}'", value);
    } else {
      error->all(FLERR,
                 "pair mdpot: unknown keyword '{}' (known: device, threads, jit_optimize, max_edges, max_memory, "
                 "message_passing, malloc_tuning, stats, dump_edges, committee, uncertainty_file, uncertainty_halt)",
                 key);
    }
  }
  if (max_edges_given && max_memory_given)
    error->all(FLERR, "pair mdpot: max_memory sizes max_edges auto; it cannot be combined with max_edges {}",
               max_edges);
  // committee first forms the spread on multiples of N (and on triggered steps): the file's lines need such steps
  if (committee_mode == CommitteeMode::FIRST && !uncertainty_every_given) uncertainty_every = committee_every;
  if (committee_mode == CommitteeMode::FIRST && uncertainty_every % committee_every != 0)
    error->all(FLERR,
               "pair mdpot: uncertainty_file every {} is not a multiple of committee first every {}: the spread is "
               "formed on multiples of {} steps",
               uncertainty_every, committee_every, committee_every);
  if (impl->model) impl->model->set_optimize(jit_optimize);
  if (!malloc_tuning) impl->malloc_tuning.reset();
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
               "pair mdpot: pair_coeff expects '* * model.pt' and {} element names (one per atom type), "
               "got {} arguments",
               ntypes, narg);
  if (strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "pair mdpot: pair_coeff must start with '* *', got '{} {}'", arg[0], arg[1]);

  const std::string path = resolve_model_path(arg[2]);
  const std::string device = select_device(path);
  set_threads();
  if (malloc_tuning && !impl->malloc_tuning) impl->malloc_tuning = std::make_unique<mdpot::MallocTuning>();
  load_model(path, device);
  map_types(narg - 3, arg + 3);
  log_setup();
  logged_committee.clear();    // said again at the next init, for this file
}

// Collective: every rank learns its node-local rank, so one GPU per rank can be picked. A file bound to the CPU
// (it calls the fused kernels, or is a package compiled for the CPU) runs there under `device auto`, and is refused
// under `device cuda` in one line saying why.
std::string PairMDPot::select_device(const std::string &path)
{
  MPI_Comm node;
  MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, comm->me, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &impl->local_rank);
  MPI_Comm_size(node, &impl->local_size);
  MPI_Comm_free(&node);

  if (device_choice == DeviceChoice::CPU) return "cpu";
  std::string why;
  const std::string bound = mdpot::bound_device(path, &why);
  if (bound == "cpu" && device_choice == DeviceChoice::CUDA)
    error->all(FLERR,
               "pair mdpot: device cuda requested, but model '{}' runs on the CPU only: {}; use 'device cpu' or "
               "'device auto', or deploy it with --format torchscript --kernels reference for the GPU",
               path, why);
  int ngpu = 0;
  try {
    ngpu = mdpot::cuda_device_count();
  } catch (const mdpot::Error &e) {
    if (device_choice == DeviceChoice::CUDA) error->all(FLERR, "pair mdpot: {}", e.what());
  }
  if (bound == "cpu") {
    if (ngpu > 0 && comm->me == 0)
      utils::logmesg(lmp, "mdpot: device auto: running on the CPU although {} GPU(s) are visible: model {} runs on "
                          "the CPU only: {}\n", ngpu, path, why);
    return "cpu";
  }
  if (device_choice == DeviceChoice::CUDA && ngpu == 0)
    error->all(FLERR,
               "pair mdpot: device cuda requested, but this torch build has no CUDA or no GPU is visible "
               "(use 'device cpu' or 'device auto')");
  if (ngpu == 0) return "cpu";    // a package compiled for CUDA is then refused by the loader, in one line
  return fmt::format("cuda:{}", impl->local_rank % ngpu);
}

// Torch's OpenMP pool is separate from LAMMPS's: without this every rank would use every core.
void PairMDPot::set_threads()
{
  const int cores = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  int n = num_threads;
  if (n == 0 && !std::getenv("OMP_NUM_THREADS"))    // with it set, torch already honours it
    n = std::max(1, cores / std::max(1, impl->local_size));
  if (n > 0) mdpot::set_num_threads(n);
  // More threads than the node's cores only wait on each other: 2 ranks x 2 threads on 2 cores ran 2-3x slower than
  // 2 x 1 (docs/benchmarks/threads.md). Said once per node.
  const int used = mdpot::num_threads();
  if (used > 1 && static_cast<long>(used) * impl->local_size > cores && impl->local_rank == 0)
    error->warning(FLERR,
                   "pair mdpot: {} rank(s) on this node x {} torch threads each exceed its {} cores, so the threads "
                   "wait on each other; use 'threads auto' without OMP_NUM_THREADS, or fewer threads",
                   impl->local_size, used, cores);
}

// The file is looked for as given, then in LAMMPS_POTENTIALS: its absolute path.
std::string PairMDPot::resolve_model_path(const std::string &path)
{
  namespace fs = std::filesystem;
  std::error_code ec;
  const std::string found = utils::get_potential_file_path(path);
  if (found.empty()) {
    const char *env = std::getenv("LAMMPS_POTENTIALS");
    error->all(FLERR, "pair mdpot: model file '{}' not found (resolved path: {}; {})", path,
               fs::absolute(fs::path(path), ec).lexically_normal().string(),
               env ? fmt::format("not in LAMMPS_POTENTIALS={} either", env) : "LAMMPS_POTENTIALS is not set");
  }
  return fs::absolute(fs::path(found), ec).lexically_normal().string();
}

// `path` as resolve_model_path gives it; the runner checks the file as the Python loader does (docs/contract.md)
// and refuses it with one line.
void PairMDPot::load_model(const std::string &path, const std::string &device)
{
  model_path = path;
  impl->model.reset();
  try {
    impl->model = std::make_unique<mdpot::Model>(model_path, device, jit_optimize);
  } catch (const mdpot::Error &e) {
    error->all(FLERR, "pair mdpot: {}", e.what());
  }
  const mdpot::Metadata &meta = impl->model->metadata();
  committee = meta.committee_size;
  deviation_step = -1;
  impl->kept.clear();
  impl->kept_tags.clear();
  impl->carried_step = -1;
  nextra = committee > 1 ? 5 : 0;    // compute pair: c_ID[1..5] (pvector stays valid: a compute pair made for
                                     // an earlier committee reads zeros after a single model replaced it)
  for (double &v : extra_values) v = 0.0;
  r_max = meta.r_max;
  receptive_field = meta.receptive_field;
  ghost_centres = receptive_field > r_max;
  // layers of message passing beyond the first: how many hops out centres still matter
  max_hops = ghost_centres ? static_cast<int>(std::ceil(receptive_field / r_max - 1e-9)) - 1 : 0;
  ghostneigh = ghost_centres ? 1 : 0;

  // Compare release numbers only: "+cpu"/"+cu126" builds read each other's TorchScript files.
  auto release = [](const std::string &v) { return v.substr(0, v.find('+')); };
  if (comm->me == 0 && release(meta.torch_version) != release(mdpot::torch_version()))
    error->warning(FLERR, "pair mdpot: model '{}' was compiled with torch {}, this plugin uses torch {}", model_path,
                   meta.torch_version, mdpot::torch_version());
}

// Pair::map_element2type maps types to the distinct names given (NULL -> -1) and sets setflag; each name
// must then be one of the model's elements.
void PairMDPot::map_types(int nelem, char **names)
{
  const int ntypes = atom->ntypes;
  const bool hybrid = force->pair_style && utils::strmatch(force->pair_style, "^hybrid");
  for (int t = 1; t <= ntypes; ++t)
    if (!hybrid && strcmp(names[t - 1], "NULL") == 0)
      error->all(FLERR,
                 "pair mdpot: NULL for LAMMPS type {} is only allowed under pair_style hybrid or hybrid/overlay",
                 t);
  map_element2type(nelem, names);

  const auto &model_elements = impl->model->metadata().elements;
  type_to_model.assign(ntypes + 1, -1);
  for (int t = 1; t <= ntypes; ++t) {
    if (map[t] < 0) continue;
    const std::string el = elements[map[t]];
    auto it = std::find(model_elements.begin(), model_elements.end(), el);
    if (it == model_elements.end())
      error->all(FLERR, "pair mdpot: element '{}' for LAMMPS type {} is not in model '{}' (model elements: {})", el,
                 t, model_path, utils::join_words(model_elements, " "));
    type_to_model[t] = static_cast<int>(it - model_elements.begin());
  }
}

// Once, on rank 0: the model, where it runs, and the type-to-element mapping.
void PairMDPot::log_setup()
{
  if (comm->me != 0) return;
  const mdpot::Metadata &meta = impl->model->metadata();
  const char *tuning = !malloc_tuning ? "off" : mdpot::MallocTuning::supported() ? "on" : "unavailable (not glibc)";
  std::string msg = fmt::format(
      "mdpot: model {} ({}, elements: {}, r_max {} Å, receptive field {} Å, {}, {}{}) on {}, {} torch thread(s) "
      "per rank, malloc_tuning {}\n",
      model_path, meta.architecture, utils::join_words(meta.elements, " "), r_max, receptive_field, meta.model_dtype,
      impl->model->format() == "aoti" ? "AOTInductor package" : "TorchScript",
      meta.kernels == "fused" ? ", fused kernels" : "", impl->model->device(), mdpot::num_threads(), tuning);
  if (impl->model->package_threads() == "dynamic" && mdpot::num_threads() == 1 && impl->model->device() == "cpu")
    msg += "mdpot: note: this package was compiled with dynamic threads, whose scatters are atomic adds even on one "
           "thread; with one thread per rank, a package deployed with --aoti-threads serial ran the benchmark Allegro "
           "1.76x faster\n";
  for (int t = 1; t <= atom->ntypes; ++t) {
    if (type_to_model[t] < 0)
      msg += fmt::format("mdpot:   type {} -> NULL (not handled by mdpot)\n", t);
    else
      msg += fmt::format("mdpot:   type {} -> {} (model index {})\n", t, meta.elements[type_to_model[t]],
                         type_to_model[t]);
  }
  utils::logmesg(lmp, msg);
}

// At init, on rank 0, whenever it changes: how a committee file runs.
void PairMDPot::log_committee()
{
  if (committee < 2 || comm->me != 0) return;
  std::string line;
  if (committee_mode == CommitteeMode::MEAN)
    line = fmt::format("mdpot: committee of {} members: the mean drives the dynamics (committee mean: every member "
                       "is evaluated on every step); the spread is c_ID[1..4] of 'compute ID all pair mdpot' (max, "
                       "min, mean force deviation, energy deviation; c_ID[5] the step) and per atom 'fix ID all pair N mdpot "
                       "force_deviation 0'\n",
                       committee);
  else
    line = fmt::format("mdpot: committee of {} members: member 0 drives the dynamics (committee first every {}: all "
                       "members are evaluated on steps that are multiples of {} and on steps where 'fix ID all pair "
                       "N mdpot force_deviation 1' (or energy_deviation 1) asks for them, member 0 alone on the "
                       "others); the spread (c_ID[1..4] of 'compute ID all pair mdpot', per atom 'fix ID all pair N "
                       "mdpot force_deviation 1') is that of the latest step the members were evaluated on (c_ID[5])\n",
                       committee, committee_every, committee_every);
  if (line != logged_committee) utils::logmesg(lmp, line);
  logged_committee = line;
}

/* ---------------------------------------------------------------------- */

void PairMDPot::init_style()
{
  if (!impl->model) error->all(FLERR, "pair mdpot: pair_coeff * * model.pt ... is not set");
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR, "pair mdpot: requires 'units metal' (the model uses eV and Å), got 'units {}'",
               update->unit_style);
  if (domain->dimension != 3) error->all(FLERR, "pair mdpot: requires a 3d system");
  if (atom->tag_enable == 0) error->all(FLERR, "pair mdpot: requires atom IDs (atom_modify id yes)");
  if (force->newton_pair == 0)
    error->all(FLERR,
               "pair mdpot: requires 'newton on' (newton pair on): forces on ghost atoms are returned to their "
               "owners by reverse communication");

  if (committee == 1 && (committee_given || !uncertainty_path.empty() || uncertainty_halt > 0))
    error->all(FLERR, "pair mdpot: {} needs a committee file (format version {}); '{}' is a single model",
               committee_given ? "committee" : uncertainty_path.empty() ? "uncertainty_halt" : "uncertainty_file",
               mdpot::contract::COMMITTEE_FORMAT_VERSION, model_path);
  log_committee();
  // rank 0 writes the file; every rank stops if it cannot (error->all: its message is never lost)
  if (!uncertainty_path.empty()) {
    int unopened = 0;
    std::string why;
    if (comm->me == 0 && !uncertainty_fp) {
      uncertainty_fp = fopen(uncertainty_path.c_str(), "w");
      if (uncertainty_fp) {
        fmt::print(uncertainty_fp,
                   "# mdpot committee of {} members ({}): force deviations in eV/Å, energy deviation in eV\n"
                   "#{:>11} {:>14} {:>14} {:>14} {:>14}\n", committee, model_path, "step", "max_devi_f", "min_devi_f",
                   "avg_devi_f", "devi_e");
        fflush(uncertainty_fp);
        uncertainty_last_step = -1;
      } else {
        unopened = 1;
        why = utils::getsyserror();
      }
    }
    MPI_Bcast(&unopened, 1, MPI_INT, 0, world);
    if (unopened) error->all(FLERR, "pair mdpot: cannot open uncertainty_file '{}': {}", uncertainty_path, why);
  }

  // Before the run's first neighbour build: binning a NaN coordinate is undefined behaviour.
  impl->faults.clear();
  check_finite_positions();
  stop_on_faults("setup");

  choose_message_passing();
  choose_max_edges();
  int flags = NeighConst::REQ_FULL;
  if (ghost_centres) flags |= NeighConst::REQ_GHOST;
  neighbor->add_request(this, flags);

  if (ghost_centres) {
    ensure_ghost_cutoff();
    if (max_edges_given && comm->me == 0)
      error->warning(FLERR,
                     "pair mdpot: max_edges {} is ignored: the model passes messages (receptive field {} Å > "
                     "r_max {} Å), so each rank evaluates all its atoms in one call",
                     max_edges, receptive_field, r_max);
  }
}

// message_passing: exchange needs the file's mp_* methods; by default a message-passing model with them uses
// the exchange, anything else the ghost shell. In exchange mode the ghost cutoff is LAMMPS's own (r_max +
// skin): a cutoff raised earlier for the ghost shell is given back.
void PairMDPot::choose_message_passing()
{
  const std::string why = impl->model->exchange_unsupported();
  if (mp_request == MessagePassing::EXCHANGE && !why.empty())
    error->all(FLERR,
               "pair mdpot: message_passing exchange: model '{}' cannot be run block by block: {}; use "
               "message_passing ghosts",
               model_path, why);
  const bool passes_messages = receptive_field > r_max;
  exchange = mp_request == MessagePassing::EXCHANGE ||
      (mp_request == MessagePassing::DEFAULT && why.empty() && passes_messages);
  ghost_centres = passes_messages && !exchange;
  ghostneigh = ghost_centres ? 1 : 0;
  comm_width = 0;
  comm_forward = comm_reverse = 0;
  rows_float32 = false;
  if (exchange) {
    if (raised_cutghost >= 0.0 && comm->cutghostuser == raised_cutghost) comm->cutghostuser = user_cutghost;
    raised_cutghost = -1.0;
    rows_float32 = impl->model->metadata().model_dtype == "float32";
    const auto &widths = impl->model->exchange_widths();
    for (size_t b = 1; b < widths.size(); ++b) comm_forward = std::max(comm_forward, row_doubles(widths[b]));
    comm_reverse = comm_forward;
    // Comm sizes its buffers from the top-level style's widths when it initialises (after this);
    // pair_style hybrid took its sub-styles' widths at pair_style time, before the model was known.
    Pair *top = force->pair;
    if (top && top != this) {
      top->comm_forward = std::max(top->comm_forward, comm_forward);
      top->comm_reverse = std::max(top->comm_reverse, comm_reverse);
    }
  }
  if (committee > 1) {    // every member's forces on ghosts go back to their owners: 3 K values per atom
    comm_reverse = std::max(comm_reverse, 3 * committee);
    // committee first: the owners' two deviations go to their ghosts, to be found by ID after atoms migrate
    if (committee_mode == CommitteeMode::FIRST) comm_forward = std::max(comm_forward, 2);
    Pair *top = force->pair;
    if (top && top != this) {
      top->comm_reverse = std::max(top->comm_reverse, comm_reverse);
      top->comm_forward = std::max(top->comm_forward, comm_forward);
    }
  }
  const std::string mode = exchange ? "exchange" : "ghosts";
  if (comm->me == 0 && mode != logged_mode) {
    if (exchange) {
      const auto &widths = impl->model->exchange_widths();
      utils::logmesg(lmp,
                     "mdpot: message_passing exchange: {} blocks on local centres, node features of ghosts "
                     "exchanged before blocks 1..{} (up to {} values per atom{}); edge geometry {}\n",
                     impl->model->exchange_blocks(), impl->model->exchange_blocks() - 1,
                     widths.size() > 1 ? *std::max_element(widths.begin() + 1, widths.end()) : 0,
                     rows_float32 ? fmt::format(", float32 packed two per double: {} doubles", comm_forward) : "",
                     impl->model->exchange_geometry_once() ? "once per step when a block is one call (mp_geometry)"
                                                            : "in every block (file without mp_geometry)");
    }
    else if (passes_messages)
      utils::logmesg(lmp, "mdpot: message_passing ghosts: ghost shell of the receptive field{}\n",
                     why.empty() ? "" : fmt::format(" (no exchange: {})", why));
  }
  logged_mode = mode;
}

// max_edges auto: the byte budget (CACHE_CHUNK_BYTES or max_memory, see the top of this file) over the bytes per
// edge the file recorded at deploy, clamped; a file without the key keeps DEFAULT_MAX_EDGES. One log line on rank 0
// whenever the choice changes. For a strictly local model the pair style counts neighbour-list entries (the skin
// included), so its calls stay below the budget; in exchange mode a chunk holds one block's graph at a time, a
// single chunk (every local edge fits) all blocks', which the whole-graph measurement covers.
void PairMDPot::choose_max_edges()
{
  const double per_edge = impl->model->metadata().bytes_per_edge;
  std::string why;
  if (ghost_centres) {
    why = "unused: message_passing ghosts evaluates each rank's atoms in one call";
  } else if (max_edges_given) {
    why = "set by pair_style";
  } else if (per_edge > 0) {
    const bool cache_sized = !exchange && !max_memory_given && impl->model->device() == "cpu";
    const double budget = cache_sized ? std::min(max_memory, CACHE_CHUNK_BYTES) : max_memory;
    const double edges = std::floor(budget / per_edge);
    max_edges = static_cast<long>(std::min<double>(std::max<double>(edges, AUTO_MIN_EDGES), AUTO_MAX_EDGES));
    why = fmt::format("auto: {} {:.6g} MB / {:.0f} bytes per edge measured at deploy{}",
                      cache_sized ? "cache-sized calls on the CPU," : "max_memory", budget / 1048576.0, per_edge,
                      edges < AUTO_MIN_EDGES ? fmt::format(", raised to the minimum {}", AUTO_MIN_EDGES)
                      : edges > AUTO_MAX_EDGES ? fmt::format(", lowered to the maximum {}", AUTO_MAX_EDGES) : "");
  } else {
    max_edges = DEFAULT_MAX_EDGES;
    why = "auto: the model file records no bytes_per_edge (deployed before mdpot measured it, or wrapped "
          "from another package), default";
  }
  const std::string line = ghost_centres ? fmt::format("mdpot: max_edges {}\n", why)
                                         : fmt::format("mdpot: max_edges {} per model call ({})\n", max_edges, why);
  if (comm->me == 0 && line != logged_max_edges) utils::logmesg(lmp, line);
  logged_max_edges = line;
}

// A message-passing model needs every atom within its receptive field, for the whole neighbour list
// lifetime (atoms move up to half a skin each way between rebuilds). A smaller user ghost cutoff is
// raised, said in the log, and given back by the destructor; comm_modify mode multi sets cutoffs per
// collection, so there the run stops with the value needed.
void PairMDPot::ensure_ghost_cutoff()
{
  const double needed = receptive_field + neighbor->skin;
  if (comm->mode != Comm::SINGLE)
    error->all(FLERR,
               "pair mdpot: model '{}' passes messages and needs a ghost cutoff of {} Å (receptive field {} Å + "
               "skin {} Å) for every atom; comm_modify mode multi sets ghost cutoffs per collection: use "
               "comm_modify mode single",
               model_path, needed, receptive_field, neighbor->skin);
  if (comm->cutghostuser >= needed) return;
  if (!(raised_cutghost >= 0.0 && comm->cutghostuser == raised_cutghost)) user_cutghost = comm->cutghostuser;
  if (comm->me == 0)
    utils::logmesg(lmp,
                   "mdpot: ghost cutoff raised from {} Å to {} Å (receptive field {} Å + skin {} Å); "
                   "set back when the pair style is replaced\n",
                   comm->cutghostuser, needed, receptive_field, neighbor->skin);
  comm->cutghostuser = raised_cutghost = needed;
}

// End of a run: what the model evaluated per step, summed over ranks. For a message-passing model the
// ghost atoms and ghost-centred edges are the redundant work of the wide ghost shell. The peak resident
// memory is each process's since it started (not only this run's): the largest rank's and the sum.
void PairMDPot::finish()
{
  auto &st = impl->stats;
  impl->carried_lost = 0;
  if (!print_stats) {
    st = MDPotImpl::Stats();
    return;
  }
  const double rss = peak_rss_mb();
  double sums[7] = {st.local_atoms, st.ghost_atoms, st.local_edges, st.ghost_edges, st.calls, st.comm_bytes, rss};
  double totals[7];
  MPI_Allreduce(sums, totals, 7, MPI_DOUBLE, MPI_SUM, world);
  double mine[3] = {st.model_seconds, st.comm_seconds, rss}, maxima[3];
  MPI_Allreduce(mine, maxima, 3, MPI_DOUBLE, MPI_MAX, world);
  if (comm->me == 0 && st.steps > 0) {
    const double steps = st.steps, local = totals[0] / steps, ghosts = totals[1] / steps;
    const double ledges = totals[2] / steps, gedges = totals[3] / steps;
    utils::logmesg(lmp,
                   "mdpot stats: mode={} format={} steps={:.0f} model_calls_per_step={:.2f} local_atoms={:.0f} ghost_atoms={:.0f} "
                   "local_edges={:.0f} ghost_edges={:.0f} ghost_atoms_per_local={:.3f} "
                   "ghost_edges_per_local={:.3f} ghost_edge_share={:.4f} model_seconds_per_step={:.6g} "
                   "comm_bytes_per_step={:.0f} comm_bytes_per_atom={:.1f} comm_seconds_per_step={:.6g} "
                   "max_edges={} peak_rss_mb_max_rank={:.0f} peak_rss_mb_all_ranks={:.0f}{}\n",
                   exchange ? "exchange" : "ghosts", impl->model->format(), steps, totals[4] / steps, local, ghosts, ledges, gedges, local > 0 ? ghosts / local : 0.0,
                   local > 0 ? gedges / local : 0.0, ledges + gedges > 0 ? gedges / (ledges + gedges) : 0.0,
                   maxima[0] / steps, totals[5] / steps, local > 0 ? totals[5] / steps / local : 0.0,
                   maxima[1] / steps, ghost_centres ? 0 : max_edges, maxima[2], totals[6],
                   // the steps (model evaluations, the run's setup included) on which every member ran
                   committee > 1 ? fmt::format(" committee={} committee_steps={:.0f}",
                                               committee_mode == CommitteeMode::MEAN ? "mean" : "first",
                                               st.committee_steps)
                                 : "");
  }
  st = MDPotImpl::Stats();
}

double PairMDPot::init_one(int i, int j)
{
  if (ghost_centres) cutghost[i][j] = cutghost[j][i] = r_max;
  return r_max;
}

// Pair's per-atom arrays, the packing buffers and what the runner keeps between calls.
double PairMDPot::memory_usage()
{
  const auto &d = *impl;
  double bytes = Pair::memory_usage();
  bytes += capacity_bytes(d.pos) + capacity_bytes(d.atom_type) + capacity_bytes(d.edge_index) +
      capacity_bytes(d.edge_j) + capacity_bytes(d.lmp_index) + capacity_bytes(d.compact) + capacity_bytes(d.hop) +
      capacity_bytes(d.comm_rows) + capacity_bytes(d.rows) + capacity_bytes(d.member_energy) +
      capacity_bytes(d.force_deviation) + capacity_bytes(d.member_atom_energy) + capacity_bytes(d.energy_deviation) +
      capacity_bytes(d.kept) + capacity_bytes(d.kept_tags);
  if (d.model) bytes += d.model->memory_usage();
  return bytes;
}

/* ---------------------------------------------------------------------- */

void PairMDPot::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  impl->faults.clear();
  check_finite_positions();
  // Strictly local models: energies are sums over centre atoms, so chunks of centres are exact.
  int next = 0, chunk = 0;
  impl->stats.steps += 1;
  if (exchange) {
    pack_inputs(0);
    if (!edge_file.empty()) dump_edges(0);    // a failure is reported after the step's communication
    if (run_exchange()) check_finite_outputs();
    stop_on_faults("step");
    scatter_forces();
    if (eflag_either) tally_energy();
    if (vflag_global) tally_virial();
    if (vflag_atom) tally_atom_virial();
    return;
  }
  const bool members = committee > 1 && committee_step();
  if (members) committee_begin();
  do {
    next = pack_inputs(next);
    if (!edge_file.empty() && !dump_edges(chunk++)) break;
    if (!run_model(members)) break;
    check_finite_outputs();
    scatter_forces();
    if (members) committee_accumulate();
    if (eflag_either) tally_energy();
    if (vflag_global) tally_virial();
    if (vflag_atom) tally_atom_virial();
  } while (next < list->inum);
  stop_on_faults("step");
  if (members) committee_finish();
}

/* ----------------------------------------------------------------------
   committees (docs/contract.md, "Committee files"): the mean (committee mean) or member 0 (committee first) drives
   the dynamics (the runner returns it as a single model's outputs); on the steps every member is evaluated, each
   member's forces on every LAMMPS atom are summed here over the step's model calls, then the ghosts' into their
   owners, before the deviations are formed
------------------------------------------------------------------------- */

// Whether this step evaluates every member: always under committee mean; under committee first on multiples of N
// and when a fix pair trigger flag is set (fix pair sets it in pre_force, and in setup, on its own steps).
bool PairMDPot::committee_step() const
{
  return committee_mode == CommitteeMode::MEAN || update->ntimestep % committee_every == 0 ||
      force_deviation_flag != 0 || energy_deviation_flag != 0;
}

void PairMDPot::committee_begin()
{
  auto &d = *impl;
  const size_t nall = atom->nlocal + atom->nghost;
  d.comm_rows.assign(nall * 3 * committee, 0.0);    // [atom][member][xyz]
  d.member_energy.assign(committee, 0.0);
  d.member_atom_energy.assign(static_cast<size_t>(atom->nlocal) * committee, 0.0);
}

void PairMDPot::committee_accumulate()
{
  auto &d = *impl;
  const int k_members = committee;
  const size_t n = d.lmp_index.size();
  const double *fk = d.out.member_forces;
  const double *ek = d.out.member_energy;
  for (int m = 0; m < k_members; ++m) {
    for (size_t r = 0; r < n; ++r) {
      double *row = &d.comm_rows[(static_cast<size_t>(d.lmp_index[r]) * k_members + m) * 3];
      const double *add = fk + (m * n + r) * 3;
      row[0] += add[0];
      row[1] += add[1];
      row[2] += add[2];
    }
    for (int r = 0; r < d.n_local; ++r) {
      const double e = ek[static_cast<size_t>(m) * d.n_local + r];
      d.member_energy[m] += e;
      d.member_atom_energy[static_cast<size_t>(d.lmp_index[r]) * k_members + m] += e;
    }
  }
}

void PairMDPot::committee_finish()
{
  auto &d = *impl;
  const int k_members = committee;
  comm_width = 3 * k_members;
  const double t0 = platform::walltime();
  comm->reverse_comm(this, comm_width);
  d.stats.comm_seconds += platform::walltime() - t0;

  // per local atom: sqrt(mean_k |F_k - F̄|^2), F̄ = F_0 + mean_k (F_k - F_0) as the file's mean
  const int nlocal = atom->nlocal;
  const int *type = atom->type;
  d.force_deviation.assign(std::max(atom->nmax, 1), 0.0);
  d.energy_deviation.assign(std::max(atom->nmax, 1), 0.0);
  double local_max = -1.0, local_min = HUGE_VAL, local_sum = 0.0, counted = 0.0;
  int local_arg = -1;
  for (int i = 0; i < nlocal; ++i) {
    if (type_to_model[type[i]] < 0) continue;
    const double *f = &d.comm_rows[static_cast<size_t>(i) * k_members * 3];
    double mean[3];
    for (int c = 0; c < 3; ++c) {
      double shift = 0.0;
      for (int m = 0; m < k_members; ++m) shift += f[3 * m + c] - f[c];
      mean[c] = f[c] + shift / k_members;
    }
    double sq = 0.0;
    for (int m = 0; m < k_members; ++m)
      for (int c = 0; c < 3; ++c) sq += (f[3 * m + c] - mean[c]) * (f[3 * m + c] - mean[c]);
    const double dev = std::sqrt(sq / k_members);
    d.force_deviation[i] = dev;
    const double *e = &d.member_atom_energy[static_cast<size_t>(i) * k_members];
    double e_shift = 0.0, e_sq = 0.0;
    for (int m = 0; m < k_members; ++m) e_shift += e[m] - e[0];
    const double e_mean = e[0] + e_shift / k_members;
    for (int m = 0; m < k_members; ++m) e_sq += (e[m] - e_mean) * (e[m] - e_mean);
    d.energy_deviation[i] = std::sqrt(e_sq / k_members);
    if (dev > local_max || (dev == local_max && atom->tag[i] < atom->tag[local_arg])) {    // ties: smallest ID
      local_max = dev;
      local_arg = i;
    }
    local_min = std::min(local_min, dev);
    local_sum += dev;
    counted += 1.0;
  }
  double maxima[1] = {local_max}, minima[1] = {local_min}, sums[2] = {local_sum, counted};
  double global_max, global_min, global_sums[2];
  MPI_Allreduce(maxima, &global_max, 1, MPI_DOUBLE, MPI_MAX, world);
  MPI_Allreduce(minima, &global_min, 1, MPI_DOUBLE, MPI_MIN, world);
  MPI_Allreduce(sums, global_sums, 2, MPI_DOUBLE, MPI_SUM, world);
  std::vector<double> energies(k_members);
  MPI_Allreduce(d.member_energy.data(), energies.data(), k_members, MPI_DOUBLE, MPI_SUM, world);
  double e_shift = 0.0;
  for (int m = 0; m < k_members; ++m) e_shift += energies[m] - energies[0];
  const double e_mean = energies[0] + e_shift / k_members;
  double e_sq = 0.0;
  for (int m = 0; m < k_members; ++m) e_sq += (energies[m] - e_mean) * (energies[m] - e_mean);
  const bool any = global_sums[1] > 0;
  const double values[4] = {any ? global_max : 0.0, any ? global_min : 0.0,
                            any ? global_sums[0] / global_sums[1] : 0.0, std::sqrt(e_sq / k_members)};
  // compute pair sums pvector over the ranks: rank 0 holds the values
  const bigint step = update->ntimestep;
  for (int v = 0; v < 4; ++v) extra_values[v] = comm->me == 0 ? values[v] : 0.0;
  extra_values[4] = comm->me == 0 ? static_cast<double>(step) : 0.0;    // c_ID[5]: the step these values are of
  deviation_step = step;
  d.stats.committee_steps += 1;
  if (committee_mode == CommitteeMode::FIRST) keep_deviations();
  if (uncertainty_fp && step % uncertainty_every == 0 && step != uncertainty_last_step) {
    fmt::print(uncertainty_fp, "{:>12} {:>14.8e} {:>14.8e} {:>14.8e} {:>14.8e}\n", step, values[0], values[1],
               values[2], values[3]);
    fflush(uncertainty_fp);
    uncertainty_last_step = step;
  }
  if (uncertainty_halt > 0 && any && global_max > uncertainty_halt) {
    // the atom: the smallest ID among those with the largest deviation
    double mine = local_arg >= 0 && d.force_deviation[local_arg] == global_max ? static_cast<double>(atom->tag[local_arg])
                                                                              : HUGE_VAL;
    double tag = 0.0;
    MPI_Allreduce(&mine, &tag, 1, MPI_DOUBLE, MPI_MIN, world);
    error->all(FLERR,
               "pair mdpot: uncertainty_halt: force deviation {:.6g} eV/Å of atom {} exceeds {} eV/Å on step {} (mean "
               "{:.6g} eV/Å, energy deviation {:.6g} eV)",
               global_max, static_cast<bigint>(tag), uncertainty_halt, step, values[2], values[3]);
  }
}

// committee first: the spread just formed, with the IDs of the local atoms and of the ghosts (whose values come
// from their owners by forward communication), so that carry_deviations() finds each atom's values by ID on later
// steps, after atoms were sorted or moved to another rank: an atom arriving here was a ghost here at that step
// unless it has travelled farther than the ghost cutoff since.
void PairMDPot::keep_deviations()
{
  auto &d = *impl;
  const int nlocal = atom->nlocal, nall = nlocal + atom->nghost;
  comm_width = 2;
  d.comm_rows.assign(static_cast<size_t>(nall) * 2, 0.0);
  for (int i = 0; i < nlocal; ++i) {
    d.comm_rows[2 * i] = d.force_deviation[i];
    d.comm_rows[2 * i + 1] = d.energy_deviation[i];
  }
  const double t0 = platform::walltime();
  comm->forward_comm(this, comm_width);
  d.stats.comm_seconds += platform::walltime() - t0;
  d.kept.swap(d.comm_rows);
  d.kept_tags.assign(atom->tag, atom->tag + nall);
  d.carried_step = update->ntimestep;
}

// committee first, on a step after the one the spread was formed on: the per-atom vectors for the atoms this rank
// owns now, found by ID among those kept. An atom not found (it came from beyond the ghost shell) reads 0, said in
// one warning per run on its rank.
void PairMDPot::carry_deviations()
{
  auto &d = *impl;
  if (committee_mode != CommitteeMode::FIRST || deviation_step < 0 || d.carried_step == update->ntimestep) return;
  d.carried_step = update->ntimestep;
  std::unordered_map<tagint, size_t> where;
  where.reserve(d.kept_tags.size());
  for (size_t k = 0; k < d.kept_tags.size(); ++k) where.emplace(d.kept_tags[k], k);    // an owner before its images
  const int nlocal = atom->nlocal;
  d.force_deviation.assign(std::max(atom->nmax, 1), 0.0);
  d.energy_deviation.assign(std::max(atom->nmax, 1), 0.0);
  int lost = 0;
  for (int i = 0; i < nlocal; ++i) {
    const auto it = where.find(atom->tag[i]);
    if (it == where.end()) {
      ++lost;
      continue;
    }
    d.force_deviation[i] = d.kept[2 * it->second];
    d.energy_deviation[i] = d.kept[2 * it->second + 1];
  }
  if (lost > 0 && d.carried_lost == 0)
    error->warning(FLERR,
                   "pair mdpot: committee first: on step {}, {} atom(s) of rank {} (e.g. ID {}) came from farther than "
                   "the ghost cutoff since step {}, the latest step the members were evaluated on: their "
                   "force_deviation and energy_deviation read 0 until the next such step",
                   update->ntimestep, lost, comm->me,
                   [&] {
                     for (int i = 0; i < nlocal; ++i)
                       if (!where.count(atom->tag[i])) return atom->tag[i];
                     return tagint(0);
                   }(),
                   deviation_step);
  d.carried_lost += lost;
}

// fix pair: `fix ID all pair N mdpot force_deviation 0` (eV/Å) or `energy_deviation 0` (eV), per-atom vectors;
// nullptr for a single model or another name. Under committee first, between the steps the members are evaluated
// on, those of the latest such step (carry_deviations).
void *PairMDPot::extract_peratom(const char *name, int &ncol)
{
  ncol = 0;
  if (committee < 2) return nullptr;
  auto &d = *impl;
  std::vector<double> *v = strcmp(name, "force_deviation") == 0 ? &d.force_deviation
      : strcmp(name, "energy_deviation") == 0                  ? &d.energy_deviation
                                                               : nullptr;
  if (!v) return nullptr;
  carry_deviations();
  if (v->size() < static_cast<size_t>(std::max(atom->nmax, 1))) v->resize(std::max(atom->nmax, 1), 0.0);
  return v->data();
}

// fix pair's trigger flags (`fix ID all pair N mdpot force_deviation 1`): LAMMPS's fix pair sets the int to 1 in
// pre_force on its steps (and in setup) and back to 0 after reading the values; a set flag makes committee first
// evaluate every member on that step. A scalar (dim 0); nullptr for a single model or another name.
void *PairMDPot::extract(const char *name, int &dim)
{
  dim = 0;
  if (committee < 2) return nullptr;
  if (strcmp(name, "force_deviation_flag") == 0) return &force_deviation_flag;
  if (strcmp(name, "energy_deviation_flag") == 0) return &energy_deviation_flag;
  return nullptr;
}

void PairMDPot::close_uncertainty_file()
{
  if (uncertainty_fp) fclose(uncertainty_fp);
  uncertainty_fp = nullptr;
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

// Notes the local atoms whose coordinates are not finite, for stop_on_faults().
void PairMDPot::check_finite_positions()
{
  double **x = atom->x;
  const int nlocal = atom->nlocal;
  auto &bad = impl->faults.positions;
  for (int i = 0; i < nlocal && bad.size() < MAX_LISTED_ATOMS; ++i)
    if (!std::isfinite(x[i][0]) || !std::isfinite(x[i][1]) || !std::isfinite(x[i][2])) bad.push_back(atom->tag[i]);
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
  if (!ghost_centres && !exchange && first_centre < list->inum) {
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
      if (!(rsq < cutsq_model)) continue;    // NaN too: stop_on_faults() names the atom
      if (rsq < overlapsq) {
        note_overlap(atom->tag[i], atom->tag[j], std::sqrt(rsq));
        continue;
      }
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
bool PairMDPot::dump_edges(int chunk)
{
  auto &d = *impl;
  const std::string path = fmt::format("{}.{}", edge_file, comm->me);
  FILE *fp = fopen(path.c_str(), chunk == 0 ? "w" : "a");
  if (!fp) {
    d.faults.rank_error = fmt::format("cannot open dump_edges file '{}': {}", path, utils::getsyserror());
    return false;
  }
  double **x = atom->x;
  utils::print(fp, "# step {} rank {} n_local {} n_atoms {} n_edges {}\n", update->ntimestep, comm->me,
               d.n_local, d.lmp_index.size(), d.n_edges);
  for (int64_t e = 0; e < d.n_edges; ++e) {
    const int i = d.lmp_index[d.edge_index[e]], j = d.lmp_index[d.edge_index[d.n_edges + e]];
    utils::print(fp, "{} {} {:.17g} {:.17g} {:.17g} {}\n", atom->tag[i], atom->tag[j], x[j][0] - x[i][0],
                 x[j][1] - x[i][1], x[j][2] - x[i][2], d.edge_index[e] < d.n_local ? 1 : 0);
  }
  fclose(fp);
  return true;
}

// The packed graph of this step as the model runner's inputs (pointers into the packing buffers).
static mdpot::Inputs packed_inputs(const MDPotImpl &d, bool want_atom_virial)
{
  mdpot::Inputs in;
  in.pos = d.pos.data();
  in.atom_type = d.atom_type.data();
  in.edge_index = d.edge_index.data();
  in.n_atoms = static_cast<int64_t>(d.lmp_index.size());
  in.n_edges = d.n_edges;
  in.n_local = d.n_local;
  in.want_atom_virial = want_atom_virial;
  return in;
}

bool PairMDPot::run_model(bool all_members)
{
  auto &d = *impl;
  const mdpot::Inputs in = packed_inputs(d, vflag_atom != 0);
  const auto call = committee_mode == CommitteeMode::MEAN ? mdpot::CommitteeCall::MEAN
      : all_members                                       ? mdpot::CommitteeCall::FIRST
                                                          : mdpot::CommitteeCall::FIRST_ALONE;
  const double t0 = platform::walltime();
  try {
    d.out = d.model->run(in, call);
  } catch (const mdpot::Error &e) {
    d.faults.rank_error = e.what();    // no collective call inside: the other ranks finish their calls
    return false;
  }
  tally_stats(platform::walltime() - t0);
  return true;
}

// message_passing exchange (docs/message_passing_exchange.md): the model runs block by block on the local
// centres; before block b > 0 the ghosts' rows of x_b are filled from their owners, and going back the
// gradients on ghost rows are summed into the owners. Every rank makes the same communication calls, with
// or without atoms.
bool PairMDPot::run_exchange()
{
  auto &d = *impl;
  const mdpot::Inputs in = packed_inputs(d, vflag_atom != 0);
  const double t0 = platform::walltime(), comm0 = d.stats.comm_seconds;
  auto &model = *d.model;
  const int blocks = model.exchange_blocks();
  const auto &widths = model.exchange_widths();
  // A model call that fails ends this rank's calls, but the rank still takes part in every exchange (with zero
  // rows), so that the other ranks finish their step and stop_on_faults() reports the error from rank 0.
  bool failed = false;
  auto attempt = [&](auto &&call) {
    if (failed) return;
    try {
      call();
    } catch (const mdpot::Error &e) {
      d.faults.rank_error = e.what();
      failed = true;
    }
  };
  std::vector<double> blank;
  auto rows_or_blank = [&](const double *rows, size_t n_rows, int width) -> const double * {
    if (!failed) return rows;
    blank.assign(n_rows * width, 0.0);
    return blank.data();
  };
  attempt([&] { model.exchange_begin(in, max_edges); });
  const double *x_local = nullptr;
  for (int b = 0; b < blocks; ++b) {
    const int width = row_doubles(widths[b]);
    const double *x_rows = b > 0 ? exchange_forward_rows(rows_or_blank(x_local, d.n_local, width), width) : nullptr;
    attempt([&] { x_local = model.exchange_forward(b, x_rows); });
  }
  attempt([&] { model.exchange_readout(); });
  const double *g_local = nullptr;
  for (int b = blocks - 1; b >= 0; --b) {
    const double *g_all = nullptr;
    attempt([&] { g_all = model.exchange_backward(b, g_local); });
    const int width = row_doubles(widths[b]);
    if (b > 0) g_local = exchange_reverse_rows(rows_or_blank(g_all, d.lmp_index.size(), width), width);
  }
  attempt([&] { d.out = model.exchange_finish(); });
  if (failed) return false;
  tally_stats(platform::walltime() - t0 - (d.stats.comm_seconds - comm0));
  d.stats.calls += std::max(model.exchange_chunks(), 1) - 1;    // a call per chunk of centres (per block)
  return true;
}

// Doubles per row in the communication buffers for rows of `width` values (mdpot_model.h): a float32 model's
// values travel as float32, two per double; LAMMPS and MPI only move the bytes.
int PairMDPot::row_doubles(int width) const
{
  return rows_float32 ? (width + 1) / 2 : width;
}

// Local rows of x_b (`width` doubles each) into the per-atom buffer, forward communication, then every compact
// row (ghosts filled).
const double *PairMDPot::exchange_forward_rows(const double *local_rows, int width)
{
  auto &d = *impl;
  const size_t w = width, nall = atom->nlocal + atom->nghost, n_rows = d.lmp_index.size();
  comm_width = width;
  d.comm_rows.assign(nall * w, 0.0);
  for (int k = 0; k < d.n_local; ++k) std::memcpy(&d.comm_rows[d.lmp_index[k] * w], local_rows + k * w, w * sizeof(double));
  const double t0 = platform::walltime();
  comm->forward_comm(this, width);
  d.stats.comm_seconds += platform::walltime() - t0;
  d.rows.resize(n_rows * w);
  for (size_t k = 0; k < n_rows; ++k) std::memcpy(&d.rows[k * w], &d.comm_rows[d.lmp_index[k] * w], w * sizeof(double));
  return d.rows.data();
}

// Gradients of every compact row into the per-atom buffer, reverse communication (ghost rows added into
// their owners'), then the local rows.
const double *PairMDPot::exchange_reverse_rows(const double *all_rows, int width)
{
  auto &d = *impl;
  const size_t w = width, nall = atom->nlocal + atom->nghost, n_rows = d.lmp_index.size();
  comm_width = width;
  d.comm_rows.assign(nall * w, 0.0);
  for (size_t k = 0; k < n_rows; ++k) std::memcpy(&d.comm_rows[d.lmp_index[k] * w], all_rows + k * w, w * sizeof(double));
  const double t0 = platform::walltime();
  comm->reverse_comm(this, width);
  d.stats.comm_seconds += platform::walltime() - t0;
  d.rows.resize(static_cast<size_t>(d.n_local) * w);
  for (int k = 0; k < d.n_local; ++k) std::memcpy(&d.rows[k * w], &d.comm_rows[d.lmp_index[k] * w], w * sizeof(double));
  return d.rows.data();
}

// Rows may belong to ghosts received in an earlier swap: the buffer covers every LAMMPS atom.
int PairMDPot::pack_forward_comm(int n, int *list, double *buf, int /*pbc_flag*/, int * /*pbc*/)
{
  const size_t w = comm_width;
  const double *rows = impl->comm_rows.data();
  for (int i = 0; i < n; ++i) std::memcpy(buf + i * w, rows + list[i] * w, w * sizeof(double));
  return n * comm_width;
}

void PairMDPot::unpack_forward_comm(int n, int first, double *buf)
{
  const size_t w = comm_width;
  std::memcpy(impl->comm_rows.data() + first * w, buf, n * w * sizeof(double));
  impl->stats.comm_bytes += static_cast<double>(n * w * sizeof(double));
}

int PairMDPot::pack_reverse_comm(int n, int first, double *buf)
{
  const size_t w = comm_width;
  std::memcpy(buf, impl->comm_rows.data() + first * w, n * w * sizeof(double));
  return n * comm_width;
}

void PairMDPot::unpack_reverse_comm(int n, int *list, double *buf)
{
  const size_t w = comm_width;
  double *rows = impl->comm_rows.data();
  if (rows_float32) {
    // each double holds two float32 gradients: added as float32 (memcpy: no aliasing of double as float)
    float sum[2], add[2];
    for (int i = 0; i < n; ++i) {
      double *row = rows + list[i] * w;
      for (size_t c = 0; c < w; ++c) {
        std::memcpy(sum, row + c, sizeof(double));
        std::memcpy(add, buf + i * w + c, sizeof(double));
        sum[0] += add[0];
        sum[1] += add[1];
        std::memcpy(row + c, sum, sizeof(double));
      }
    }
  } else {
    for (int i = 0; i < n; ++i) {
      double *row = rows + list[i] * w;
      for (size_t c = 0; c < w; ++c) row[c] += buf[i * w + c];
    }
  }
  impl->stats.comm_bytes += static_cast<double>(n * w * sizeof(double));
}

void PairMDPot::check_finite_outputs()
{
  auto &d = *impl;
  auto &faults = d.faults;
  const double *fk = d.out.forces;
  const double *ek = d.out.atom_energy;
  const int64_t n = static_cast<int64_t>(d.lmp_index.size());
  for (int64_t k = 0; k < n && faults.outputs.size() < MAX_LISTED_ATOMS; ++k) {
    bool ok = std::isfinite(fk[3 * k]) && std::isfinite(fk[3 * k + 1]) && std::isfinite(fk[3 * k + 2]);
    if (k < d.n_local) ok = ok && std::isfinite(ek[k]);
    if (!ok) faults.outputs.push_back(atom->tag[d.lmp_index[k]]);
  }
  const double *w = d.out.virial;
  for (int c = 0; c < 9; ++c) faults.virial = faults.virial || !std::isfinite(w[c]);
}

// The overlapping pair of smallest IDs this step.
void PairMDPot::note_overlap(tagint a, tagint b, double distance)
{
  auto &faults = impl->faults;
  const tagint lo = std::min(a, b), hi = std::max(a, b);
  if (faults.overlap[0] == 0 || std::make_pair(lo, hi) < std::make_pair(faults.overlap[0], faults.overlap[1])) {
    faults.overlap[0] = lo;
    faults.overlap[1] = hi;
    faults.overlap_distance = distance;
  }
}

// Every rank calls this at the same point of the step. If any rank noted a fault, rank 0 gathers them and all ranks
// stop together with one message (error->all): non-finite positions first, then an overlap, then a rank's error (of
// the lowest rank with one), then non-finite outputs, naming the smallest atom IDs over all ranks. A rank stopping
// alone (error->one) aborts the job, and under load mpirun can drop that rank's message. Costs one MPI_Allreduce of
// an int per step when nothing is wrong.
void PairMDPot::stop_on_faults(const char *when)
{
  const auto &f = impl->faults;
  const int mine = (f.positions.empty() ? 0 : 1) | (f.overlap[0] > 0 ? 2 : 0) |
      (f.outputs.empty() && !f.virial ? 0 : 4) | (f.rank_error.empty() ? 0 : 8);
  int any = 0;
  MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_BOR, world);
  if (!any) return;

  // a fixed-size record per rank: [n, positions...] [n, outputs...] [overlapping pair]
  constexpr int N = static_cast<int>(MAX_LISTED_ATOMS);
  constexpr int PAIR = 2 * (N + 1), RECORD = PAIR + 2;
  std::vector<tagint> record(RECORD, 0);
  auto put = [&](int at, const std::vector<tagint> &ids) {
    record[at] = static_cast<tagint>(ids.size());
    std::copy(ids.begin(), ids.end(), record.begin() + at + 1);
  };
  put(0, f.positions);
  put(N + 1, f.outputs);
  record[PAIR] = f.overlap[0];
  record[PAIR + 1] = f.overlap[1];
  const int nprocs = comm->nprocs;
  std::vector<tagint> records(comm->me == 0 ? static_cast<size_t>(RECORD) * nprocs : 0);
  std::vector<double> distances(comm->me == 0 ? nprocs : 0);
  MPI_Gather(record.data(), RECORD, MPI_LMP_TAGINT, records.data(), RECORD, MPI_LMP_TAGINT, 0, world);
  MPI_Gather(&f.overlap_distance, 1, MPI_DOUBLE, distances.data(), 1, MPI_DOUBLE, 0, world);
  // the error of the lowest rank that has one
  int error_rank = -1;
  std::string rank_error;
  if (any & 8) {
    const int have = f.rank_error.empty() ? nprocs : comm->me;
    MPI_Allreduce(&have, &error_rank, 1, MPI_INT, MPI_MIN, world);
    int length = comm->me == error_rank ? static_cast<int>(f.rank_error.size()) : 0;
    MPI_Bcast(&length, 1, MPI_INT, error_rank, world);
    rank_error = comm->me == error_rank ? f.rank_error : std::string(length, ' ');
    MPI_Bcast(rank_error.data(), length, MPI_CHAR, error_rank, world);
  }

  std::string message;
  if (comm->me == 0) {
    auto listed = [&](int at) {
      std::vector<tagint> ids;
      for (int r = 0; r < nprocs; ++r) {
        const tagint *rec = records.data() + static_cast<size_t>(r) * RECORD + at;
        ids.insert(ids.end(), rec + 1, rec + 1 + rec[0]);
      }
      std::sort(ids.begin(), ids.end());
      ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
      if (ids.size() > MAX_LISTED_ATOMS) ids.resize(MAX_LISTED_ATOMS);
      std::vector<std::string> words;
      for (tagint id : ids) words.push_back(std::to_string(id));
      return utils::join_words(words, ", ");
    };
    const bigint step = update->ntimestep;
    if (any & 1) {
      message = fmt::format("non-finite positions at {} of step {} for atom IDs {}", when, step, listed(0));
    } else if (any & 2) {
      std::pair<tagint, tagint> first(0, 0);    // the pair of smallest IDs over the ranks
      double distance = 0.0;
      for (int r = 0; r < nprocs; ++r) {
        const tagint *pair = records.data() + static_cast<size_t>(r) * RECORD + PAIR;
        if (pair[0] > 0 && (first.first == 0 || std::make_pair(pair[0], pair[1]) < first)) {
          first = {pair[0], pair[1]};
          distance = distances[r];
        }
      }
      message = fmt::format("atoms {} and {} overlap (distance {:.3g} Å < {} Å) on step {}", first.first, first.second,
                            distance, OVERLAP_DISTANCE, step);
    } else if (any & 8) {
      message = nprocs > 1 ? fmt::format("on step {} (rank {}): {}", step, error_rank, rank_error)
                           : fmt::format("on step {}: {}", step, rank_error);
    } else {
      const std::string ids = listed(N + 1);
      message = fmt::format("model returned non-finite energy/forces/virial on step {} for atom IDs {}", step,
                            ids.empty() ? std::string("(virial only)") : ids);
    }
  }
  error->all(FLERR, "pair mdpot: {}", message);
}

// Forces on ghosts go to the ghost slots; reverse communication adds them to the owners.
void PairMDPot::scatter_forces()
{
  auto &d = *impl;
  double **f = atom->f;
  const double *fk = d.out.forces;
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
  const double *ek = d.out.atom_energy;
  if (eflag_global)
    for (int k = 0; k < d.n_local; ++k) eng_vdwl += ek[k];
  if (eflag_atom)
    for (int k = 0; k < d.n_local; ++k) eatom[d.lmp_index[k]] += ek[k];
}

void PairMDPot::tally_virial()
{
  add_voigt(virial, impl->out.virial);
}

void PairMDPot::tally_atom_virial()
{
  auto &d = *impl;
  const double *w = d.out.atom_virial;
  const size_t n = d.lmp_index.size();
  for (size_t k = 0; k < n; ++k) add_voigt(vatom[d.lmp_index[k]], w + 9 * k);
}
