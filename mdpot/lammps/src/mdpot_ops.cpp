/* ----------------------------------------------------------------------
   mdpot_ops: fused CPU kernels of the channel-wise tensor product (libmdpot_ops.so).

   Registered as torch operators (namespace `mdpot`), so eager Python, TorchScript files and the LAMMPS
   plugin's model runner call the same code:

   - mdpot::tp_scatter: NequIP's convolution. out[k, centre[e], u] += w[path(k), e, u] *
     sum_t c_t x[i_t, neighbour[e], u] y[j_t, e, u] over the Wigner 3j terms t of output component k, the
     neighbour's features gathered inside the kernel: no [D, E, U] temporary exists.
   - mdpot::tp_gather: Allegro's product with the centre's environment, out[k, e, u] =
     sum_t c_t x[i_t, e, u] env[j_t, centre[e], u], the gather of env fused.
   - mdpot::tp_scatter_shared: tp_scatter whose weights depend on the edge length only: edge e reads row row[e]
     of a table w [P, Q, U] of the Q distinct lengths (NequIP's radial network evaluated once per length), and its
     backward gives the edge lengths r [E] their gradient through dw = dw/dr, the table's derivative.
   - mdpot::distinct: the distinct values of a float tensor, bit for bit, in order of first occurrence, with every
     entry's index (a hash table, no sort).
   - mdpot::parallel_threads: how many threads the kernels' loops run on now (torch's count; 1 if built without
     OpenMP). torch.classes.mdpot.PackageRunner: a CPU AOTInductor package whose calls from Python threads overlap.

   Each has its backward as a separate operator (one pass over the edges, recomputing the per-edge products
   instead of storing them), and a C++ autograd function under the Autograd key, so first-order gradients
   work from Python and TorchScript alike. Double backward (create_graph=True) is refused with one line:
   training keeps the reference implementation (mdpot.nn.ChannelwiseTensorProduct).

   Work is split over centres (edges grouped by centre through a CSR index built by counting sort, the
   identity when edge_index[0] is already non-decreasing), so scatters into centres need no atomics. The
   gradient of tp_scatter's x scatters by neighbour: with more than one thread each thread accumulates into its
   own buffer and the buffers are summed in thread order, so results do not depend on scheduling. tp_gather
   and its backward take tiles of EDGE_TILE consecutive edges (split over tiles, or over centres in the backward)
   one term at a time, so a term reads and writes contiguous rows of each plane.

   Tensors: features [D, M, U] with any strides on the first two dimensions and unit stride on U (copied
   otherwise); indices int64; float32 or float64. CPU only: other devices get one clear error.

   Exportable: num_targets is a SymInt and mdpot.ops registers shape-only (fake) kernels, so make_fx/torch.export
   trace the operators with symbolic sizes; the backward operators return an empty [0] tensor for a gradient not
   asked for (a compiled program expects a tensor for every output).
------------------------------------------------------------------------- */

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <torch/autograd.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/custom_class.h>
#include <torch/library.h>

#include <array>
#include <cstdint>
#include <optional>
#include <type_traits>
#include <string>
#include <vector>

namespace {

using at::Tensor;

// The coupling table of ChannelwiseTensorProduct: output component k sums c[t] * x[i[t]] * y[j[t]] over
// t = ptr[k] .. ptr[k+1]-1; path[k] is the weight plane of component k (tp_scatter only). unit[t]: y's
// component j[t] == 0 is identically 1 (spherical harmonics), so the term needs no y and gives y no gradient.
struct Terms {
  int64_t d_out = 0, n_paths = 0;
  std::vector<int64_t> ptr, i, j, path;
  std::vector<double> c;
  std::vector<char> unit;
};

using Ints = c10::ArrayRef<int64_t>;
using Reals = c10::ArrayRef<double>;

Terms read_terms(const char *op, Ints ptr, Ints ti, Ints tj, Reals tc, const Ints *path, bool unit_y, int64_t d1,
                 int64_t d2)
{
  Terms t;
  t.ptr = ptr.vec();
  t.i = ti.vec();
  t.j = tj.vec();
  t.c = tc.vec();
  const int64_t n = static_cast<int64_t>(t.i.size());
  TORCH_CHECK(t.ptr.size() >= 2 && t.ptr.front() == 0 && t.ptr.back() == n && static_cast<int64_t>(t.j.size()) == n &&
                  static_cast<int64_t>(t.c.size()) == n,
              op, ": inconsistent coupling table (term_ptr must run from 0 to the ", n, " terms of term_i, term_j, term_c)");
  t.d_out = static_cast<int64_t>(t.ptr.size()) - 1;
  for (int64_t k = 0; k < t.d_out; ++k)
    TORCH_CHECK(t.ptr[k] < t.ptr[k + 1], op, ": output component ", k, " has no term");
  for (int64_t q = 0; q < n; ++q) {
    TORCH_CHECK(t.i[q] >= 0 && t.i[q] < d1, op, ": term_i ", t.i[q], " out of range for x with ", d1, " components");
    TORCH_CHECK(t.j[q] >= 0 && t.j[q] < d2, op, ": term_j ", t.j[q], " out of range for y with ", d2, " components");
  }
  t.unit.resize(n);
  for (int64_t q = 0; q < n; ++q) t.unit[q] = unit_y && t.j[q] == 0;
  if (path) {
    t.path = path->vec();
    TORCH_CHECK(static_cast<int64_t>(t.path.size()) == t.d_out, op, ": comp_path has ", t.path.size(),
                " entries for ", t.d_out, " output components");
    for (int64_t p : t.path) {
      TORCH_CHECK(p >= 0, op, ": negative comp_path entry ", p);
      t.n_paths = std::max(t.n_paths, p + 1);
    }
  }
  return t;
}

void check_cpu(const char *op, const char *name, const Tensor &t)
{
  TORCH_CHECK(t.device().is_cpu(), op, ": the fused kernels run on CPU only, got ", name, " on ", t.device(),
              "; deploy with --kernels reference for other devices");
}

// Features [D, M, U] with unit stride on U.
Tensor planes(const Tensor &t, const char *op, const char *name)
{
  TORCH_CHECK(t.dim() == 3, op, ": ", name, " must be [D, M, U], got shape ", t.sizes());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op, ": ", name,
              " must be float32 or float64, got ", t.scalar_type());
  check_cpu(op, name, t);
  return t.stride(2) == 1 || t.size(2) <= 1 ? t : t.contiguous();
}

Tensor index(const Tensor &t, int64_t size, int64_t bound, const char *op, const char *name)
{
  TORCH_CHECK(t.dim() == 1 && t.scalar_type() == at::kLong && t.size(0) == size, op, ": ", name,
              " must be a 1-D int64 tensor of ", size, " entries, got ", t.scalar_type(), " of shape ", t.sizes());
  check_cpu(op, name, t);
  const Tensor c = t.contiguous();
  const int64_t *p = c.data_ptr<int64_t>();
  for (int64_t e = 0; e < size; ++e)
    TORCH_CHECK(p[e] >= 0 && p[e] < bound, op, ": ", name, "[", e, "] = ", p[e], " out of range [0, ", bound, ")");
  return c;
}

// Edges grouped by centre: edges of centre c are edge(q) for q in ptr[c] .. ptr[c+1]-1, in their original
// order (a stable counting sort; no permutation when the centres are already non-decreasing).
struct ByCentre {
  std::vector<int64_t> ptr, perm;
  int64_t edge(int64_t q) const { return perm.empty() ? q : perm[q]; }
};

ByCentre group_by_centre(const int64_t *centre, int64_t n_edges, int64_t n_centres)
{
  ByCentre g;
  g.ptr.assign(n_centres + 1, 0);
  bool sorted = true;
  for (int64_t e = 0; e < n_edges; ++e) {
    ++g.ptr[centre[e] + 1];
    if (e && centre[e] < centre[e - 1]) sorted = false;
  }
  for (int64_t c = 0; c < n_centres; ++c) g.ptr[c + 1] += g.ptr[c];
  if (!sorted) {
    g.perm.resize(n_edges);
    std::vector<int64_t> next(g.ptr.begin(), g.ptr.end() - 1);
    for (int64_t e = 0; e < n_edges; ++e) g.perm[next[centre[e]]++] = e;
  }
  return g;
}

template <typename T> struct View {    // [D, M, U], unit stride on U
  T *data;
  int64_t s0, s1;
  T *row(int64_t d, int64_t m) const { return data + d * s0 + m * s1; }
};

template <typename T> View<T> view_of(const Tensor &t)
{
  return {t.data_ptr<std::remove_const_t<T>>(), t.stride(0), t.stride(1)};
}

// acc[u] = sum over the terms of component k of c x[i, xm, u] y[j, ym, u or 0]
template <typename T>
inline void component(const Terms &tt, int64_t k, const View<const T> &x, int64_t xm, const View<const T> &y,
                      int64_t ym, bool y_bcast, T *acc, int64_t U)
{
  for (int64_t u = 0; u < U; ++u) acc[u] = T(0);
  for (int64_t t = tt.ptr[k]; t < tt.ptr[k + 1]; ++t) {
    const T *xr = x.row(tt.i[t], xm);
    const T c = static_cast<T>(tt.c[t]);
    if (tt.unit[t]) {
      for (int64_t u = 0; u < U; ++u) acc[u] += c * xr[u];
    } else if (y_bcast) {
      const T s = c * y.row(tt.j[t], ym)[0];
      for (int64_t u = 0; u < U; ++u) acc[u] += s * xr[u];
    } else {
      const T *yr = y.row(tt.j[t], ym);
      for (int64_t u = 0; u < U; ++u) acc[u] += c * xr[u] * yr[u];
    }
  }
}

// sum over u of a[u] b[u] (times c[u]): eight independent partial sums, so the loop vectorises and does not wait
// on one chain of dependent additions (a plain `s += ...` loop runs at one addition per FP-add latency)
template <typename T> inline T sum8(const T *part)
{
  return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}

template <typename T> inline T dot(const T *a, const T *b, int64_t U)
{
  T part[8] = {T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0)};
  int64_t u = 0;
  for (; u + 8 <= U; u += 8)
    for (int l = 0; l < 8; ++l) part[l] += a[u + l] * b[u + l];
  for (; u < U; ++u) part[0] += a[u] * b[u];
  return sum8(part);
}

template <typename T> inline T dot(const T *a, const T *b, const T *c, int64_t U)
{
  T part[8] = {T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0)};
  int64_t u = 0;
  for (; u + 8 <= U; u += 8)
    for (int l = 0; l < 8; ++l) part[l] += a[u + l] * b[u + l] * c[u + l];
  for (; u < U; ++u) part[0] += a[u] * b[u] * c[u];
  return sum8(part);
}

// d(acc_k)/d(x, y) applied to ga [U]: gx[i] += c y ga, gy[j] += c x ga (summed over u when y is broadcast)
template <typename T>
inline void component_backward(const Terms &tt, int64_t k, const View<const T> &x, int64_t xm, const View<const T> &y,
                               int64_t ym, bool y_bcast, const T *ga, T *gx_base, int64_t gx_s0, T *gy_base,
                               int64_t gy_s0, int64_t U)
{
  for (int64_t t = tt.ptr[k]; t < tt.ptr[k + 1]; ++t) {
    const T c = static_cast<T>(tt.c[t]);
    const T *xr = x.row(tt.i[t], xm);
    if (gx_base) {
      T *g = gx_base + tt.i[t] * gx_s0;
      if (tt.unit[t]) {
        for (int64_t u = 0; u < U; ++u) g[u] += c * ga[u];
      } else if (y_bcast) {
        const T s = c * y.row(tt.j[t], ym)[0];
        for (int64_t u = 0; u < U; ++u) g[u] += s * ga[u];
      } else {
        const T *yr = y.row(tt.j[t], ym);
        for (int64_t u = 0; u < U; ++u) g[u] += c * yr[u] * ga[u];
      }
    }
    if (gy_base && !tt.unit[t]) {
      T *g = gy_base + tt.j[t] * gy_s0;
      if (y_bcast) {
        g[0] += c * dot<T>(xr, ga, U);
      } else {
        for (int64_t u = 0; u < U; ++u) g[u] += c * xr[u] * ga[u];
      }
    }
  }
}

// Whether output component k is one term whose y factor is a scalar per edge (the unit Y_0, or y broadcast over the
// channels), as most components of l_max <= 1 are: then the kernels fold c y into one coefficient and need no
// per-component buffer.
inline bool single_scalar_term(const Terms &tt, int64_t k, bool y_bcast)
{
  const int64_t t = tt.ptr[k];
  return tt.ptr[k + 1] == t + 1 && (tt.unit[t] || y_bcast);
}

// c_t, times y[j_t, e] unless term t is a unit term
template <typename T> inline T term_scale(const Terms &tt, int64_t t, const View<const T> &y, int64_t e)
{
  const T c = static_cast<T>(tt.c[t]);
  return tt.unit[t] ? c : c * y.row(tt.j[t], e)[0];
}

constexpr int64_t GRAIN = 8;    // centres per task

// tp_gather's loops go over tiles of EDGE_TILE consecutive edges one term at a time: the tile's rows of each [D, E, U]
// plane are contiguous, so a term streams through a few kB instead of each edge touching a row of every plane
// (Allegro l_max 2: 51 output and 9 input planes; edge by edge its backward ran 4x slower at 1 400 edges per call
// than at 200, once the planes outgrew the L2 cache).
constexpr int64_t EDGE_TILE = 32;

// A shared table's rows are read in random order: ask for the rows of an edge a few edges ahead, so that their
// cache misses overlap with this edge's arithmetic.
constexpr int64_t PREFETCH_AHEAD = 4;

template <typename T> inline void prefetch_row(const T *row, int64_t n)
{
  for (int64_t off = 0; off < n; off += static_cast<int64_t>(64 / sizeof(T))) __builtin_prefetch(row + off);
}

template <typename T>
inline void prefetch_table(const int64_t *wr_of, const ByCentre &g, int64_t q, int64_t q_end, const View<const T> &w,
                           const View<const T> *dw, int64_t row_len)
{
  if (!wr_of || q + PREFETCH_AHEAD >= q_end) return;
  const int64_t r = wr_of[g.edge(q + PREFETCH_AHEAD)];
  prefetch_row(w.row(0, r), row_len);
  if (dw) prefetch_row(dw->row(0, r), row_len);
}

// The neighbour's feature rows (d = 0 .. D-1 of x [D, N, U], and of its gradient buffer when given) of an edge a
// few edges ahead: neighbours are read in no particular order.
template <typename T, typename G>
inline void prefetch_neighbour(const int64_t *nb, const ByCentre &g, int64_t q, int64_t q_end, const View<const T> &x,
                               int64_t D, int64_t U, const View<G> *gx)
{
  if (q + PREFETCH_AHEAD >= q_end) return;
  const int64_t n = nb[g.edge(q + PREFETCH_AHEAD)];
  for (int64_t d = 0; d < D; ++d) {
    prefetch_row(x.row(d, n), U);
    if (gx && gx->data) prefetch_row(gx->row(d, n), U);
  }
}

// The threads at::parallel_for runs on: torch's count when this file is compiled with OpenMP (the torch headers'
// parallel_for is an inline `omp parallel`), otherwise one.
inline int kernel_threads()
{
#ifdef _OPENMP
  return at::get_num_threads();
#else
  return 1;
#endif
}

// Per-thread accumulators for a scatter whose targets threads share: thread 0 writes into `out`, the others
// into zeroed copies that finish() adds in thread order (deterministic for a given thread count).
struct ThreadBuffers {
  Tensor out;
  std::vector<Tensor> extra;
  explicit ThreadBuffers(const Tensor &target) : out(target)
  {
    const int n = kernel_threads();
    for (int k = 1; k < n; ++k) extra.push_back(at::zeros_like(target));
  }
  Tensor &of(int tid) { return tid == 0 || extra.empty() ? out : extra[tid - 1]; }
  void finish()
  {
    for (auto &b : extra) out.add_(b);
  }
};

// ------------------------------------------------------------------------------------------- tp_scatter

const char *SCATTER = "mdpot::tp_scatter";

// The weights of edge e are row wrow[e] of w (shared: one row per distinct edge length) or row e (wrow empty).
Tensor scatter_forward(const char *op, const Tensor &x_, const Tensor &y_, const Tensor &w_, const Tensor *wrow_,
                       const Tensor &centre_, const Tensor &neighbour_, int64_t num_targets, Ints term_ptr, Ints term_i,
                       Ints term_j, Reals term_c, Ints comp_path, bool unit_y)
{
  const Tensor x = planes(x_, op, "x"), y = planes(y_, op, "y"), w = planes(w_, op, "w");
  TORCH_CHECK(num_targets >= 0, op, ": num_targets must be >= 0, got ", num_targets);
  const int64_t N = x.size(1), U = x.size(2), E = y.size(1);
  TORCH_CHECK(y.scalar_type() == x.scalar_type() && w.scalar_type() == x.scalar_type(), op,
              ": x, y and w must have one dtype, got ", x.scalar_type(), ", ", y.scalar_type(), ", ", w.scalar_type());
  TORCH_CHECK(y.size(2) == U || y.size(2) == 1, op, ": y must be [D2, E, ", U, " or 1], got ", y.sizes());
  const Terms tt = read_terms(op, term_ptr, term_i, term_j, term_c, &comp_path, unit_y, x.size(0), y.size(0));
  const int64_t W = wrow_ ? w.size(1) : E;
  TORCH_CHECK(w.size(0) == tt.n_paths && w.size(1) == W && w.size(2) == U, op, ": w must be [", tt.n_paths,
              ", ", W, ", ", U, "], got ", w.sizes());
  const Tensor centre = index(centre_, E, num_targets, op, "centre");
  const Tensor neighbour = index(neighbour_, E, N, op, "neighbour");
  const Tensor wrow = wrow_ ? index(*wrow_, E, W, op, "row") : Tensor();
  const int64_t *wr_of = wrow_ ? wrow.data_ptr<int64_t>() : nullptr;
  Tensor out = at::zeros({tt.d_out, num_targets, U}, x.options());
  if (E == 0 || U == 0) return out;
  const ByCentre g = group_by_centre(centre.data_ptr<int64_t>(), E, num_targets);
  const bool y_bcast = y.size(2) == 1 && U > 1;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "tp_scatter", [&] {
    const View<const scalar_t> xv = view_of<const scalar_t>(x), yv = view_of<const scalar_t>(y),
                               wv = view_of<const scalar_t>(w);
    const int64_t *nb = neighbour.data_ptr<int64_t>();
    scalar_t *o = out.data_ptr<scalar_t>();
    at::parallel_for(0, num_targets, GRAIN, [&](int64_t c0, int64_t c1) {
      std::vector<scalar_t> acc(U), sum(tt.d_out * U);
      for (int64_t c = c0; c < c1; ++c) {
        if (g.ptr[c] == g.ptr[c + 1]) continue;
        std::fill(sum.begin(), sum.end(), scalar_t(0));
        for (int64_t q = g.ptr[c]; q < g.ptr[c + 1]; ++q) {
          const int64_t e = g.edge(q), n = nb[e], we = wr_of ? wr_of[e] : e;
          prefetch_table<scalar_t>(wr_of, g, q, g.ptr[c1], wv, nullptr, tt.n_paths * U);
          prefetch_neighbour<scalar_t, const scalar_t>(nb, g, q, g.ptr[c1], xv, x.size(0), U, nullptr);
          for (int64_t k = 0; k < tt.d_out; ++k) {
            const scalar_t *wr = wv.row(tt.path[k], we);
            scalar_t *s = sum.data() + k * U;
            const int64_t t = tt.ptr[k];
            if (single_scalar_term(tt, k, y_bcast)) {    // one pass: s += (c y) x w
              const scalar_t coef = term_scale<scalar_t>(tt, t, yv, e);
              const scalar_t *xr = xv.row(tt.i[t], n);
              for (int64_t u = 0; u < U; ++u) s[u] += coef * xr[u] * wr[u];
              continue;
            }
            component(tt, k, xv, n, yv, e, y_bcast, acc.data(), U);
            for (int64_t u = 0; u < U; ++u) s[u] += acc[u] * wr[u];
          }
        }
        for (int64_t k = 0; k < tt.d_out; ++k)
          std::copy(sum.begin() + k * U, sum.begin() + (k + 1) * U, o + (k * num_targets + c) * U);
      }
    });
  });
  return out;
}

Tensor tp_scatter_cpu(const Tensor &x, const Tensor &y, const Tensor &w, const Tensor &centre, const Tensor &neighbour,
                      int64_t num_targets, Ints term_ptr, Ints term_i, Ints term_j, Reals term_c, Ints comp_path,
                      bool unit_y)
{
  return scatter_forward(SCATTER, x, y, w, nullptr, centre, neighbour, num_targets, term_ptr, term_i, term_j, term_c,
                         comp_path, unit_y);
}

// tp_scatter with a shared radial table: w [P, Q, U] holds the weights of the Q distinct edge lengths and row [E]
// maps each edge to its length. r [E] (the edge lengths) is read by the backward only, through dw = dw/dr [P, Q, U].
const char *SHARED = "mdpot::tp_scatter_shared";

Tensor tp_scatter_shared_cpu(const Tensor &x, const Tensor &y, const Tensor &r, const Tensor &w, const Tensor &dw,
                             const Tensor &row, const Tensor &centre, const Tensor &neighbour, int64_t num_targets,
                             Ints term_ptr, Ints term_i, Ints term_j, Reals term_c, Ints comp_path, bool unit_y)
{
  TORCH_CHECK(r.dim() == 1 && r.size(0) == y.size(1), SHARED, ": r must be [", y.size(1), "], got ", r.sizes());
  TORCH_CHECK(dw.sizes() == w.sizes(), SHARED, ": dw must have w's shape ", w.sizes(), ", got ", dw.sizes());
  return scatter_forward(SHARED, x, y, w, &row, centre, neighbour, num_targets, term_ptr, term_i, term_j, term_c,
                         comp_path, unit_y);
}

// Gradients w.r.t. (x, y, w) of tp_scatter, or w.r.t. (x, y, r) of tp_scatter_shared (wrow_ and dw_ given):
// there the third is dE/dr[e] = sum over components and channels of grad * product * dw[path, wrow[e]].
std::tuple<Tensor, Tensor, Tensor> scatter_backward(
    const char *op, const Tensor &grad_out_, const Tensor &x_, const Tensor &y_, const Tensor &w_, const Tensor *dw_,
    const Tensor *wrow_, const Tensor &centre_, const Tensor &neighbour_, Ints term_ptr, Ints term_i, Ints term_j,
    Reals term_c, Ints comp_path, bool unit_y, std::array<bool, 3> mask)
{
  const Tensor x = planes(x_, op, "x"), y = planes(y_, op, "y"), w = planes(w_, op, "w");
  const Tensor dw = dw_ ? planes(*dw_, op, "dw") : Tensor();
  const Tensor go = planes(grad_out_, op, "grad_out");
  const int64_t N = x.size(1), U = x.size(2), E = y.size(1), T = go.size(1);
  const Terms tt = read_terms(op, term_ptr, term_i, term_j, term_c, &comp_path, unit_y, x.size(0), y.size(0));
  TORCH_CHECK(go.size(0) == tt.d_out && go.size(2) == U && go.scalar_type() == x.scalar_type(), op,
              ": grad_out must be [", tt.d_out, ", T, ", U, "] of x's dtype, got ", go.sizes());
  const Tensor centre = index(centre_, E, T, op, "centre");
  const Tensor neighbour = index(neighbour_, E, N, op, "neighbour");
  const bool shared = wrow_ != nullptr;
  const int64_t W = shared ? w.size(1) : E;
  TORCH_CHECK(w.size(0) == tt.n_paths && w.size(1) == W && w.size(2) == U && w.scalar_type() == x.scalar_type() &&
                  (!shared || (dw.sizes() == w.sizes() && dw.scalar_type() == x.scalar_type())),
              op, ": w (and dw) must be [", tt.n_paths, ", ", W, ", ", U,
              "] of x's dtype, got ", w.sizes());
  const Tensor wrow = shared ? index(*wrow_, E, W, op, "row") : Tensor();
  const int64_t *wr_of = shared ? wrow.data_ptr<int64_t>() : nullptr;
  Tensor gx = mask[0] ? at::zeros_like(x) : at::empty({0}, x.options());
  Tensor gy = mask[1] ? at::zeros_like(y) : at::empty({0}, x.options());
  Tensor gw = !mask[2] ? at::empty({0}, x.options()) : shared ? at::zeros({E}, x.options()) : at::zeros_like(w);
  if (E == 0 || U == 0 || !(mask[0] || mask[1] || mask[2])) return {gx, gy, gw};
  const ByCentre g = group_by_centre(centre.data_ptr<int64_t>(), E, T);
  const bool y_bcast = y.size(2) == 1 && U > 1;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "tp_scatter_backward", [&] {
    const View<const scalar_t> xv = view_of<const scalar_t>(x), yv = view_of<const scalar_t>(y),
                               wv = view_of<const scalar_t>(w), gov = view_of<const scalar_t>(go);
    const View<const scalar_t> dwv = shared ? view_of<const scalar_t>(dw) : View<const scalar_t>{nullptr, 0, 0};
    scalar_t *gr_of = shared && mask[2] ? gw.data_ptr<scalar_t>() : nullptr;
    const int64_t *nb = neighbour.data_ptr<int64_t>();
    std::optional<ThreadBuffers> gxb;
    if (mask[0]) gxb.emplace(gx);
    const View<scalar_t> gyv = mask[1] ? view_of<scalar_t>(gy) : View<scalar_t>{nullptr, 0, 0};
    const View<scalar_t> gwv = mask[2] && !shared ? view_of<scalar_t>(gw) : View<scalar_t>{nullptr, 0, 0};
    at::parallel_for(0, T, GRAIN, [&](int64_t c0, int64_t c1) {
      std::vector<scalar_t> acc(U), ga(U);
      const View<scalar_t> gxv = mask[0] ? view_of<scalar_t>(gxb->of(at::get_thread_num())) : View<scalar_t>{nullptr, 0, 0};
      for (int64_t c = c0; c < c1; ++c) {
        for (int64_t q = g.ptr[c]; q < g.ptr[c + 1]; ++q) {
          const int64_t e = g.edge(q), n = nb[e], we = wr_of ? wr_of[e] : e;
          prefetch_table<scalar_t>(wr_of, g, q, g.ptr[c1], wv, shared ? &dwv : nullptr, tt.n_paths * U);
          prefetch_neighbour<scalar_t, scalar_t>(nb, g, q, g.ptr[c1], xv, x.size(0), U, &gxv);
          scalar_t g_r = scalar_t(0);
          for (int64_t k = 0; k < tt.d_out; ++k) {
            const scalar_t *gr = gov.row(k, c);
            const scalar_t *wr = wv.row(tt.path[k], we);
            if (single_scalar_term(tt, k, y_bcast)) {    // the same sums without the per-component buffers
              const int64_t t = tt.ptr[k];
              const scalar_t coef = term_scale<scalar_t>(tt, t, yv, e);
              const scalar_t *xr = xv.row(tt.i[t], n);
              if (mask[2]) {
                if (shared) {
                  g_r += coef * dot<scalar_t>(gr, xr, dwv.row(tt.path[k], we), U);
                } else {
                  scalar_t *gwr = gwv.row(tt.path[k], e);
                  for (int64_t u = 0; u < U; ++u) gwr[u] += coef * gr[u] * xr[u];
                }
              }
              if (mask[0]) {
                scalar_t *gxr = gxv.row(tt.i[t], n);
                for (int64_t u = 0; u < U; ++u) gxr[u] += coef * gr[u] * wr[u];
              }
              if (mask[1] && !tt.unit[t])
                gyv.row(tt.j[t], e)[0] += static_cast<scalar_t>(tt.c[t]) * dot<scalar_t>(xr, gr, wr, U);
              continue;
            }
            if (mask[2]) {
              component(tt, k, xv, n, yv, e, y_bcast, acc.data(), U);
              if (shared) {
                g_r += dot<scalar_t>(gr, acc.data(), dwv.row(tt.path[k], we), U);
              } else {
                scalar_t *gwr = gwv.row(tt.path[k], e);
                for (int64_t u = 0; u < U; ++u) gwr[u] += gr[u] * acc[u];
              }
            }
            if (mask[0] || mask[1]) {
              for (int64_t u = 0; u < U; ++u) ga[u] = gr[u] * wr[u];
              component_backward(tt, k, xv, n, yv, e, y_bcast, ga.data(), mask[0] ? gxv.row(0, n) : nullptr,
                                 gxv.s0, mask[1] ? gyv.row(0, e) : nullptr, gyv.s0, U);
            }
          }
          if (gr_of) gr_of[e] = g_r;
        }
      }
    });
    if (mask[0]) gxb->finish();
  });
  return {gx, gy, gw};
}

std::tuple<Tensor, Tensor, Tensor> tp_scatter_backward_cpu(
    const Tensor &grad_out, const Tensor &x, const Tensor &y, const Tensor &w, const Tensor &centre,
    const Tensor &neighbour, Ints term_ptr, Ints term_i, Ints term_j, Reals term_c, Ints comp_path, bool unit_y,
    std::array<bool, 3> mask)
{
  return scatter_backward("mdpot::tp_scatter_backward", grad_out, x, y, w, nullptr, nullptr, centre, neighbour,
                          term_ptr, term_i, term_j, term_c, comp_path, unit_y, mask);
}

std::tuple<Tensor, Tensor, Tensor> tp_scatter_shared_backward_cpu(
    const Tensor &grad_out, const Tensor &x, const Tensor &y, const Tensor &w, const Tensor &dw, const Tensor &row,
    const Tensor &centre, const Tensor &neighbour, Ints term_ptr, Ints term_i, Ints term_j, Reals term_c,
    Ints comp_path, bool unit_y, std::array<bool, 3> mask)
{
  return scatter_backward("mdpot::tp_scatter_shared_backward", grad_out, x, y, w, &dw, &row, centre, neighbour,
                          term_ptr, term_i, term_j, term_c, comp_path, unit_y, mask);
}

// -------------------------------------------------------------------------------------------- tp_gather

const char *GATHER = "mdpot::tp_gather";

Tensor tp_gather_cpu(const Tensor &x_, const Tensor &env_, const Tensor &centre_, Ints term_ptr, Ints term_i,
                     Ints term_j, Reals term_c)
{
  const Tensor x = planes(x_, GATHER, "x"), env = planes(env_, GATHER, "env");
  const int64_t E = x.size(1), U = x.size(2), T = env.size(1);
  TORCH_CHECK(env.scalar_type() == x.scalar_type(), GATHER, ": x and env must have one dtype, got ", x.scalar_type(),
              " and ", env.scalar_type());
  TORCH_CHECK(env.size(2) == U, GATHER, ": env must be [D2, T, ", U, "], got ", env.sizes());
  const Terms tt = read_terms(GATHER, term_ptr, term_i, term_j, term_c, nullptr, false, x.size(0), env.size(0));
  const Tensor centre = index(centre_, E, T, GATHER, "centre");
  Tensor out = at::empty({tt.d_out, E, U}, x.options());
  if (E == 0 || U == 0) return out.zero_();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "tp_gather", [&] {
    const View<const scalar_t> xv = view_of<const scalar_t>(x), ev = view_of<const scalar_t>(env);
    const int64_t *ce = centre.data_ptr<int64_t>();
    scalar_t *o = out.data_ptr<scalar_t>();
    at::parallel_for(0, (E + EDGE_TILE - 1) / EDGE_TILE, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t e0 = b * EDGE_TILE, e1 = std::min(E, e0 + EDGE_TILE);
        for (int64_t k = 0; k < tt.d_out; ++k) {
          scalar_t *ok = o + k * E * U;
          std::fill(ok + e0 * U, ok + e1 * U, scalar_t(0));
          for (int64_t t = tt.ptr[k]; t < tt.ptr[k + 1]; ++t) {    // terms in order: the sums of component()
            const scalar_t cf = static_cast<scalar_t>(tt.c[t]);
            const int64_t i = tt.i[t], j = tt.j[t];
            for (int64_t e = e0; e < e1; ++e) {
              const scalar_t *__restrict xr = xv.row(i, e);
              const scalar_t *__restrict er = ev.row(j, ce[e]);
              scalar_t *__restrict orow = ok + e * U;
              for (int64_t u = 0; u < U; ++u) orow[u] += cf * xr[u] * er[u];
            }
          }
        }
      }
    });
  });
  return out;
}

std::tuple<Tensor, Tensor> tp_gather_backward_cpu(const Tensor &grad_out_, const Tensor &x_, const Tensor &env_,
                                                  const Tensor &centre_, Ints term_ptr, Ints term_i,
                                                  Ints term_j, Reals term_c, std::array<bool, 2> mask)
{
  const char *op = "mdpot::tp_gather_backward";
  const Tensor x = planes(x_, op, "x"), env = planes(env_, op, "env"), go = planes(grad_out_, op, "grad_out");
  const int64_t E = x.size(1), U = x.size(2), T = env.size(1);
  const Terms tt = read_terms(op, term_ptr, term_i, term_j, term_c, nullptr, false, x.size(0), env.size(0));
  TORCH_CHECK(go.size(0) == tt.d_out && go.size(1) == E && go.size(2) == U && go.scalar_type() == x.scalar_type(), op,
              ": grad_out must be [", tt.d_out, ", ", E, ", ", U, "] of x's dtype, got ", go.sizes());
  const Tensor centre = index(centre_, E, T, op, "centre");
  Tensor gx = mask[0] ? at::zeros_like(x) : at::empty({0}, x.options());
  Tensor genv = mask[1] ? at::zeros_like(env) : at::empty({0}, x.options());
  if (E == 0 || U == 0 || !(mask[0] || mask[1])) return {gx, genv};
  const ByCentre g = group_by_centre(centre.data_ptr<int64_t>(), E, T);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "tp_gather_backward", [&] {
    const View<const scalar_t> xv = view_of<const scalar_t>(x), ev = view_of<const scalar_t>(env),
                               gov = view_of<const scalar_t>(go);
    const View<scalar_t> gxv = mask[0] ? view_of<scalar_t>(gx) : View<scalar_t>{nullptr, 0, 0};
    const View<scalar_t> gev = mask[1] ? view_of<scalar_t>(genv) : View<scalar_t>{nullptr, 0, 0};
    at::parallel_for(0, T, GRAIN, [&](int64_t c0, int64_t c1) {
      // tiles of EDGE_TILE edges (in centre order) within this task's centres, each taken term by term
      int64_t edge_of[EDGE_TILE], centre_of[EDGE_TILE];
      int64_t c = c0, q = g.ptr[c0];
      const int64_t q_end = g.ptr[c1];
      while (q < q_end) {
        int64_t n = 0;
        for (; n < EDGE_TILE && q < q_end; ++q, ++n) {
          while (q >= g.ptr[c + 1]) ++c;
          edge_of[n] = g.edge(q);
          centre_of[n] = c;
        }
        for (int64_t k = 0; k < tt.d_out; ++k)
          for (int64_t t = tt.ptr[k]; t < tt.ptr[k + 1]; ++t) {
            const scalar_t cf = static_cast<scalar_t>(tt.c[t]);
            const int64_t i = tt.i[t], j = tt.j[t];
            for (int64_t m = 0; m < n; ++m) {
              const int64_t e = edge_of[m];
              const scalar_t *__restrict ga = gov.row(k, e);
              if (mask[0]) {
                const scalar_t *__restrict er = ev.row(j, centre_of[m]);
                scalar_t *__restrict gxr = gxv.row(i, e);
                for (int64_t u = 0; u < U; ++u) gxr[u] += cf * er[u] * ga[u];
              }
              if (mask[1]) {
                const scalar_t *__restrict xr = xv.row(i, e);
                scalar_t *__restrict ger = gev.row(j, centre_of[m]);
                for (int64_t u = 0; u < U; ++u) ger[u] += cf * xr[u] * ga[u];
              }
            }
          }
      }
    });
  });
  return {gx, genv};
}

// ----------------------------------------------------------------------------------------- distinct

// The distinct values of a 1-D float tensor, bit for bit, in order of first occurrence, and for every entry the
// index of its value: values[inverse] == v exactly. One pass with an open-addressing hash table on the bit
// patterns (no sort); a function evaluated once per distinct value and expanded through `inverse` gives every
// entry exactly what evaluating it there would. First-occurrence order keeps the rows that neighbouring entries
// read close together in memory.
const char *DISTINCT = "mdpot::distinct";

template <typename Bits> void distinct_bits(const Bits *v, int64_t n, std::vector<int64_t> &first, int64_t *inverse)
{
  int shift = 63;    // the hash is the top (64 - shift) bits of a Fibonacci product: cap = 2^(64 - shift) >= 2
  uint64_t cap = 2;
  while (cap < static_cast<uint64_t>(2 * n + 2)) {
    cap <<= 1;
    --shift;
  }
  std::vector<int64_t> slot(cap, -1);    // index into `first` of the value stored there
  const uint64_t mask = cap - 1;
  for (int64_t e = 0; e < n; ++e) {
    const Bits b = v[e];
    uint64_t h = (static_cast<uint64_t>(b) * 0x9E3779B97F4A7C15ull) >> shift;
    while (true) {
      const int64_t k = slot[h];
      if (k < 0) {
        slot[h] = static_cast<int64_t>(first.size());
        inverse[e] = static_cast<int64_t>(first.size());
        first.push_back(e);
        break;
      }
      if (v[first[k]] == b) {
        inverse[e] = k;
        break;
      }
      h = (h + 1) & mask;
    }
  }
}

std::tuple<Tensor, Tensor> distinct_cpu(const Tensor &values_)
{
  TORCH_CHECK(values_.dim() == 1 && (values_.scalar_type() == at::kFloat || values_.scalar_type() == at::kDouble),
              DISTINCT, ": expects a 1-D float32 or float64 tensor, got ", values_.scalar_type(), " of shape ",
              values_.sizes());
  check_cpu(DISTINCT, "values", values_);
  const Tensor values = values_.contiguous();
  const int64_t n = values.size(0);
  Tensor inverse = at::empty({n}, values.options().dtype(at::kLong));
  std::vector<int64_t> first;
  first.reserve(static_cast<size_t>(n / 2 + 1));
  if (values.scalar_type() == at::kFloat)
    distinct_bits(reinterpret_cast<const uint32_t *>(values.data_ptr<float>()), n, first, inverse.data_ptr<int64_t>());
  else
    distinct_bits(reinterpret_cast<const uint64_t *>(values.data_ptr<double>()), n, first, inverse.data_ptr<int64_t>());
  const Tensor index = at::tensor(first, values.options().dtype(at::kLong));
  return {values.index_select(0, index), inverse};
}

// ------------------------------------------------------------------------------------------ autograd

const char *NO_DOUBLE_BACKWARD =
    ": double backward (create_graph=True) is not supported by mdpot's fused kernels; train and take gradients of "
    "gradients with the reference kernels (ChannelwiseTensorProduct.fused = False)";

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// The coupling table travels with the context as IValues.
void save_terms(AutogradContext *ctx, Ints ptr, Ints ti, Ints tj, Reals tc)
{
  ctx->saved_data["ptr"] = ptr.vec();
  ctx->saved_data["i"] = ti.vec();
  ctx->saved_data["j"] = tj.vec();
  ctx->saved_data["c"] = tc.vec();
}

class TpScatter : public torch::autograd::Function<TpScatter> {
 public:
  static Tensor forward(AutogradContext *ctx, const Tensor &x, const Tensor &y, const Tensor &w, const Tensor &centre,
                        const Tensor &neighbour, c10::SymInt num_targets, Ints term_ptr, Ints term_i, Ints term_j,
                        Reals term_c, Ints comp_path, bool unit_y)
  {
    ctx->save_for_backward({x, y, w, centre, neighbour});
    save_terms(ctx, term_ptr, term_i, term_j, term_c);
    ctx->saved_data["path"] = comp_path.vec();
    ctx->saved_data["unit_y"] = unit_y;
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("mdpot::tp_scatter", "").typed<Tensor(
        const Tensor &, const Tensor &, const Tensor &, const Tensor &, const Tensor &, c10::SymInt, Ints, Ints, Ints,
        Reals, Ints, bool)>();
    return op.call(x, y, w, centre, neighbour, num_targets, term_ptr, term_i, term_j, term_c, comp_path, unit_y);
  }

  static tensor_list backward(AutogradContext *ctx, tensor_list grads)
  {
    TORCH_CHECK(!at::GradMode::is_enabled(), SCATTER, NO_DOUBLE_BACKWARD);
    const auto s = ctx->get_saved_variables();
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("mdpot::tp_scatter_backward", "")
                         .typed<decltype(tp_scatter_backward_cpu)>();
    const std::array<bool, 3> mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1), ctx->needs_input_grad(2)};
    auto &d = ctx->saved_data;
    const auto ptr = d["ptr"].toIntVector(), ti = d["i"].toIntVector(), tj = d["j"].toIntVector(),
               path = d["path"].toIntVector();
    const auto tc = d["c"].toDoubleVector();
    auto [gx, gy, gw] = op.call(grads[0], s[0], s[1], s[2], s[3], s[4], ptr, ti, tj, tc, path, d["unit_y"].toBool(), mask);
    return {mask[0] ? gx : Tensor(), mask[1] ? gy : Tensor(), mask[2] ? gw : Tensor(), Tensor(), Tensor(), Tensor(),
            Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

// Differentiable w.r.t. x, y and r; the table (w, dw) is a constant of the call (a deployed model's radial MLP,
// evaluated without gradient), and one that requires a gradient is refused rather than silently given none.
class TpScatterShared : public torch::autograd::Function<TpScatterShared> {
 public:
  static Tensor forward(AutogradContext *ctx, const Tensor &x, const Tensor &y, const Tensor &r, const Tensor &w,
                        const Tensor &dw, const Tensor &row, const Tensor &centre, const Tensor &neighbour,
                        c10::SymInt num_targets, Ints term_ptr, Ints term_i, Ints term_j, Reals term_c, Ints comp_path,
                        bool unit_y)
  {
    TORCH_CHECK(!w.requires_grad() && !dw.requires_grad(), SHARED,
                ": the shared radial table (w, dw) takes no gradient; train with the reference kernels");
    ctx->save_for_backward({x, y, w, dw, row, centre, neighbour});
    save_terms(ctx, term_ptr, term_i, term_j, term_c);
    ctx->saved_data["path"] = comp_path.vec();
    ctx->saved_data["unit_y"] = unit_y;
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("mdpot::tp_scatter_shared", "").typed<Tensor(
        const Tensor &, const Tensor &, const Tensor &, const Tensor &, const Tensor &, const Tensor &, const Tensor &,
        const Tensor &, c10::SymInt, Ints, Ints, Ints, Reals, Ints, bool)>();
    return op.call(x, y, r, w, dw, row, centre, neighbour, num_targets, term_ptr, term_i, term_j, term_c, comp_path,
                   unit_y);
  }

  static tensor_list backward(AutogradContext *ctx, tensor_list grads)
  {
    TORCH_CHECK(!at::GradMode::is_enabled(), SHARED, NO_DOUBLE_BACKWARD);
    const auto s = ctx->get_saved_variables();
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("mdpot::tp_scatter_shared_backward", "")
                         .typed<decltype(tp_scatter_shared_backward_cpu)>();
    const std::array<bool, 3> mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1), ctx->needs_input_grad(2)};
    auto &d = ctx->saved_data;
    const auto ptr = d["ptr"].toIntVector(), ti = d["i"].toIntVector(), tj = d["j"].toIntVector(),
               path = d["path"].toIntVector();
    const auto tc = d["c"].toDoubleVector();
    auto [gx, gy, gr] = op.call(grads[0], s[0], s[1], s[2], s[3], s[4], s[5], s[6], ptr, ti, tj, tc, path,
                                d["unit_y"].toBool(), mask);
    tensor_list out(15);
    if (mask[0]) out[0] = gx;
    if (mask[1]) out[1] = gy;
    if (mask[2]) out[2] = gr;
    return out;
  }
};

class TpGather : public torch::autograd::Function<TpGather> {
 public:
  static Tensor forward(AutogradContext *ctx, const Tensor &x, const Tensor &env, const Tensor &centre, Ints term_ptr,
                        Ints term_i, Ints term_j, Reals term_c)
  {
    ctx->save_for_backward({x, env, centre});
    save_terms(ctx, term_ptr, term_i, term_j, term_c);
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("mdpot::tp_gather", "").typed<decltype(tp_gather_cpu)>();
    return op.call(x, env, centre, term_ptr, term_i, term_j, term_c);
  }

  static tensor_list backward(AutogradContext *ctx, tensor_list grads)
  {
    TORCH_CHECK(!at::GradMode::is_enabled(), GATHER, NO_DOUBLE_BACKWARD);
    const auto s = ctx->get_saved_variables();
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("mdpot::tp_gather_backward", "")
                         .typed<decltype(tp_gather_backward_cpu)>();
    const std::array<bool, 2> mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1)};
    auto &d = ctx->saved_data;
    const auto ptr = d["ptr"].toIntVector(), ti = d["i"].toIntVector(), tj = d["j"].toIntVector();
    const auto tc = d["c"].toDoubleVector();
    auto [gx, genv] = op.call(grads[0], s[0], s[1], s[2], ptr, ti, tj, tc, mask);
    return {mask[0] ? gx : Tensor(), mask[1] ? genv : Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

Tensor tp_scatter_autograd(const Tensor &x, const Tensor &y, const Tensor &w, const Tensor &centre,
                           const Tensor &neighbour, c10::SymInt num_targets, Ints term_ptr, Ints term_i, Ints term_j,
                           Reals term_c, Ints comp_path, bool unit_y)
{
  return TpScatter::apply(x, y, w, centre, neighbour, num_targets, term_ptr, term_i, term_j, term_c, comp_path, unit_y);
}

Tensor tp_scatter_shared_autograd(const Tensor &x, const Tensor &y, const Tensor &r, const Tensor &w, const Tensor &dw,
                                  const Tensor &row, const Tensor &centre, const Tensor &neighbour,
                                  c10::SymInt num_targets, Ints term_ptr, Ints term_i, Ints term_j, Reals term_c,
                                  Ints comp_path, bool unit_y)
{
  return TpScatterShared::apply(x, y, r, w, dw, row, centre, neighbour, num_targets, term_ptr, term_i, term_j, term_c,
                                comp_path, unit_y);
}

Tensor tp_gather_autograd(const Tensor &x, const Tensor &env, const Tensor &centre, Ints term_ptr, Ints term_i,
                          Ints term_j, Reals term_c)
{
  return TpGather::apply(x, env, centre, term_ptr, term_i, term_j, term_c);
}

// Any other backend (CUDA, ...): one clear line instead of the dispatcher's list of backends.
Tensor not_on_cpu(const char *op, const Tensor &x)
{
  TORCH_CHECK(false, op, ": the fused kernels run on CPU only, got x on ", x.device(),
              "; deploy with --kernels reference for other devices");
  return Tensor();
}

// How many threads a parallel loop of these kernels runs on now: each chunk of a 1024-step at::parallel_for marks
// the thread that ran it. 1 when the library was compiled without OpenMP, whatever torch's thread count.
int64_t parallel_threads()
{
  std::vector<char> ran(std::max(at::get_num_threads(), 1), 0);
  at::parallel_for(0, 1024, 1, [&](int64_t, int64_t) {
    const int tid = at::get_thread_num();
    if (tid >= 0 && tid < static_cast<int>(ran.size())) ran[tid] = 1;
  });
  int64_t n = 0;
  for (char r : ran) n += r;
  return n;
}

// An AOTInductor package's program for Python callers (torch.classes.mdpot.PackageRunner): torch's own Python
// binding of the loader holds Python's lock for the whole call, so calls from two threads run one after the other;
// a method of a registered class runs without it, and num_runners copies of the program's state let that many calls
// overlap (the ASE calculator's chunks, mdpot.deploy.aoti).
struct PackageRunner : torch::CustomClassHolder {
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader;
  PackageRunner(const std::string &path, const std::string &program, int64_t num_runners)
  {
    TORCH_CHECK(num_runners >= 1, "mdpot.PackageRunner: num_runners must be >= 1, got ", num_runners);
    loader = std::make_unique<torch::inductor::AOTIModelPackageLoader>(
        path, program, /*run_single_threaded=*/false, static_cast<size_t>(num_runners), /*device_index=*/-1);
  }
  std::vector<Tensor> run(const std::vector<Tensor> &inputs) { return loader->run(inputs); }
};

}    // namespace

TORCH_LIBRARY(mdpot, m)
{
  m.class_<PackageRunner>("PackageRunner")
      .def(torch::init<std::string, std::string, int64_t>())
      .def("run", &PackageRunner::run);
  m.def("parallel_threads() -> int", &parallel_threads);
  m.def("tp_scatter(Tensor x, Tensor y, Tensor w, Tensor centre, Tensor neighbour, SymInt num_targets, "
        "int[] term_ptr, int[] term_i, int[] term_j, float[] term_c, int[] comp_path, bool unit_y) -> Tensor");
  m.def("tp_scatter_backward(Tensor grad_out, Tensor x, Tensor y, Tensor w, Tensor centre, Tensor neighbour, "
        "int[] term_ptr, int[] term_i, int[] term_j, float[] term_c, int[] comp_path, bool unit_y, "
        "bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  m.def("tp_scatter_shared(Tensor x, Tensor y, Tensor r, Tensor w, Tensor dw, Tensor row, Tensor centre, "
        "Tensor neighbour, SymInt num_targets, int[] term_ptr, int[] term_i, int[] term_j, float[] term_c, "
        "int[] comp_path, bool unit_y) -> Tensor");
  m.def("tp_scatter_shared_backward(Tensor grad_out, Tensor x, Tensor y, Tensor w, Tensor dw, Tensor row, "
        "Tensor centre, Tensor neighbour, int[] term_ptr, int[] term_i, int[] term_j, float[] term_c, "
        "int[] comp_path, bool unit_y, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  m.def("distinct(Tensor values) -> (Tensor, Tensor)");
  m.def("tp_gather(Tensor x, Tensor env, Tensor centre, int[] term_ptr, int[] term_i, int[] term_j, "
        "float[] term_c) -> Tensor");
  m.def("tp_gather_backward(Tensor grad_out, Tensor x, Tensor env, Tensor centre, int[] term_ptr, int[] term_i, "
        "int[] term_j, float[] term_c, bool[2] output_mask) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(mdpot, CPU, m)
{
  m.impl("tp_scatter", &tp_scatter_cpu);
  m.impl("tp_scatter_backward", &tp_scatter_backward_cpu);
  m.impl("tp_scatter_shared", &tp_scatter_shared_cpu);
  m.impl("tp_scatter_shared_backward", &tp_scatter_shared_backward_cpu);
  m.impl("tp_gather", &tp_gather_cpu);
  m.impl("distinct", &distinct_cpu);
  m.impl("tp_gather_backward", &tp_gather_backward_cpu);
}

TORCH_LIBRARY_IMPL(mdpot, Autograd, m)
{
  m.impl("tp_scatter", &tp_scatter_autograd);
  m.impl("tp_scatter_shared", &tp_scatter_shared_autograd);
  m.impl("tp_gather", &tp_gather_autograd);
}

TORCH_LIBRARY_IMPL(mdpot, CUDA, m)
{
  m.impl("tp_scatter", [](const Tensor &x, const Tensor &, const Tensor &, const Tensor &, const Tensor &, c10::SymInt,
                          Ints, Ints, Ints, Reals, Ints, bool) {
    return not_on_cpu(SCATTER, x);
  });
  m.impl("tp_scatter_shared", [](const Tensor &x, const Tensor &, const Tensor &, const Tensor &, const Tensor &,
                                 const Tensor &, const Tensor &, const Tensor &, c10::SymInt, Ints, Ints, Ints, Reals,
                                 Ints, bool) {
    return not_on_cpu(SHARED, x);
  });
  m.impl("tp_gather", [](const Tensor &x, const Tensor &, const Tensor &, Ints, Ints, Ints, Reals) {
    return not_on_cpu(GATHER, x);
  });
  m.impl("distinct", [](const Tensor &values) {
    not_on_cpu(DISTINCT, values);
    return std::tuple<Tensor, Tensor>();
  });
}

// Version of the operators' schemas; the model runner calls it, which also makes the plugin depend on this library.
extern "C" __attribute__((visibility("default"))) int mdpot_ops_abi()
{
  return 1;
}
