/* ----------------------------------------------------------------------
   mdpot_model_check: the model runner without LAMMPS, for tests (tests/lammps/test_model_runner.py).

   mdpot_model_check check MODEL [DEVICE]
       loads MODEL; prints "OK <architecture> <dtype> <elements>" (exit 0) or "REFUSED: <reason>" (exit 1)
   mdpot_model_check check-each MODEL [MODEL ...]
       the verdict of "check" on the CPU for each MODEL, one line per file in the given order (exit 0)
   mdpot_model_check run MODEL INPUT OUTPUT [DEVICE]
       evaluates MODEL on a packed graph. INPUT (native-endian binary): int64 n_atoms, n_edges, n_local,
       want_atom_virial; float64 pos[n_atoms*3]; int64 atom_type[n_atoms]; int64 edge_index[2*n_edges].
       OUTPUT: float64 atom_energy[n_local], forces[n_atoms*3], virial[9], atom_virial[n_atoms*9] (only if
       asked for).
   mdpot_model_check sha256 FILE
       prints the SHA-256 of FILE's bytes (checks the runner's own implementation)
   mdpot_model_check bound-device FILE
       prints mdpot::bound_device(FILE) ("cpu", "cuda" or "-" for none): the device the pair style's
       `device auto` must choose for FILE
------------------------------------------------------------------------- */

#include "mdpot_model.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace {

int usage()
{
  std::fprintf(stderr,
               "usage: mdpot_model_check check MODEL [DEVICE] | check-each MODEL [MODEL ...] | "
               "run MODEL INPUT OUTPUT [DEVICE] | sha256 FILE | bound-device FILE\n");
  return 2;
}

std::vector<char> read_file(const std::string &path)
{
  std::ifstream in(path, std::ios::binary);
  if (!in) throw mdpot::Error("cannot open '" + path + "'");
  return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

template <typename T> std::vector<T> take(const std::vector<char> &bytes, size_t &offset, int64_t count)
{
  const size_t n = static_cast<size_t>(count) * sizeof(T);
  if (count < 0 || offset + n > bytes.size()) throw mdpot::Error("input file too short");
  std::vector<T> out(static_cast<size_t>(count));
  std::copy(bytes.data() + offset, bytes.data() + offset + n, reinterpret_cast<char *>(out.data()));
  offset += n;
  return out;
}

int run(const std::string &model_path, const std::string &input, const std::string &output, const std::string &device)
{
  mdpot::Model model(model_path, device, false);
  const std::vector<char> bytes = read_file(input);
  size_t offset = 0;
  const auto header = take<int64_t>(bytes, offset, 4);
  mdpot::Inputs in;
  in.n_atoms = header[0];
  in.n_edges = header[1];
  in.n_local = header[2];
  in.want_atom_virial = header[3] != 0;
  const auto pos = take<double>(bytes, offset, 3 * in.n_atoms);
  const auto types = take<int64_t>(bytes, offset, in.n_atoms);
  const auto edges = take<int64_t>(bytes, offset, 2 * in.n_edges);
  in.pos = pos.data();
  in.atom_type = types.data();
  in.edge_index = edges.data();
  const mdpot::Outputs out = model.run(in);
  std::ofstream file(output, std::ios::binary);
  auto put = [&](const double *p, int64_t n) { file.write(reinterpret_cast<const char *>(p), n * sizeof(double)); };
  put(out.atom_energy, in.n_local);
  put(out.forces, 3 * in.n_atoms);
  put(out.virial, 9);
  if (in.want_atom_virial) put(out.atom_virial, 9 * in.n_atoms);
  if (!file) throw mdpot::Error("cannot write '" + output + "'");
  return 0;
}

}    // namespace

// One line: "OK <architecture> <dtype> <elements>" or "REFUSED: <reason>"; true if the model loaded.
bool verdict(const char *path, const char *device)
{
  try {
    mdpot::Model model(path, device, false);
    const auto &m = model.metadata();
    std::string elements;
    for (const auto &e : m.elements) elements += (elements.empty() ? "" : " ") + e;
    std::printf("OK %s %s %s\n", m.architecture.c_str(), m.model_dtype.c_str(), elements.c_str());
    return true;
  } catch (const mdpot::Error &e) {
    std::printf("REFUSED: %s\n", e.what());
    return false;
  }
}

int main(int argc, char **argv)
{
  if (argc < 3) return usage();
  const std::string mode = argv[1];
  try {
    if (mode == "check" && argc <= 4) return verdict(argv[2], argc == 4 ? argv[3] : "cpu") ? 0 : 1;
    if (mode == "check-each") {
      // one process for many files: loading torch once is most of a check's time
      for (int k = 2; k < argc; ++k) verdict(argv[k], "cpu");
      return 0;
    }
    if (mode == "run" && (argc == 5 || argc == 6)) return run(argv[2], argv[3], argv[4], argc == 6 ? argv[5] : "cpu");
    if (mode == "bound-device" && argc == 3) {
      const std::string bound = mdpot::bound_device(argv[2]);
      std::printf("%s\n", bound.empty() ? "-" : bound.c_str());
      return 0;
    }
    if (mode == "sha256" && argc == 3) {
      const std::vector<char> bytes = read_file(argv[2]);
      mdpot::Sha256 h;
      h.update(bytes.data(), bytes.size());
      std::printf("%s\n", h.hexdigest().c_str());
      return 0;
    }
  } catch (const mdpot::Error &e) {
    std::printf("REFUSED: %s\n", e.what());
    return 1;
  }
  return usage();
}
