// SPDX-License-Identifier: MIT
// qx-bench's results: one table per run, each row a figure measured for several subjects (the
// floor first), printed, written as JSON and drawn as a chart of ratios ("ours vs floor": how
// many times ours is better; below 1 is worse).
#pragma once

#include <fmt/format.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bench_io.hpp"

namespace qxa::bench {

struct report {
  struct row {
    std::string figure;
    std::vector<std::optional<double>> values;  ///< one per column
    bool lower_is_better;
  };
  std::vector<std::string> columns;         ///< "floor", "ours", ...
  std::vector<std::pair<int, int>> ratios;  ///< (subject, reference) column pairs
  std::vector<row> rows;

  /// How many times `subject` beats `reference` in `r` (above 1 is better).
  static std::optional<double> ratio(const row& r, int subject, int reference) {
    const auto& s = r.values[static_cast<std::size_t>(subject)];
    const auto& o = r.values[static_cast<std::size_t>(reference)];
    if (!s || !o || *s <= 0 || *o <= 0) return std::nullopt;
    return r.lower_is_better ? *o / *s : *s / *o;
  }
  [[nodiscard]] std::string ratio_name(std::pair<int, int> p) const {
    return columns[static_cast<std::size_t>(p.first)] + " vs " +
           columns[static_cast<std::size_t>(p.second)];
  }
  /// A JSON key: "qemu-ga" becomes "qemu_ga", "ours vs floor" "ours_vs_floor".
  static std::string key(std::string name) {
    for (auto& c : name) {
      if (c == ' ' || c == '-') c = '_';
    }
    return name;
  }

  void print() const {
    std::printf("%-46s", "figure");
    for (const auto& c : columns) std::printf(" %12s", c.c_str());
    for (const auto& p : ratios) std::printf(" %16s", ratio_name(p).c_str());
    std::printf("\n");
    for (const auto& r : rows) {
      std::printf("%-46s", r.figure.c_str());
      for (const auto& v : r.values) {
        std::printf(" %12s", v ? fmt::format("{:.3f}", *v).c_str() : "-");
      }
      for (const auto& p : ratios) {
        const auto x = ratio(r, p.first, p.second);
        std::printf(" %16s", x ? fmt::format("{:.2f}x", *x).c_str() : "-");
      }
      std::printf("\n");
    }
    std::printf("(\"A vs B\": how many times A is better than B; below 1 is worse)\n");
  }

  [[nodiscard]] nlohmann::ordered_json rows_json() const {
    auto out = nlohmann::ordered_json::array();
    for (const auto& r : rows) {
      nlohmann::ordered_json j = {{"figure", r.figure}};
      for (std::size_t i = 0; i < columns.size(); ++i) {
        j[key(columns[i])] =
            r.values[i] ? nlohmann::ordered_json(*r.values[i]) : nlohmann::ordered_json(nullptr);
      }
      for (const auto& p : ratios) {
        const auto x = ratio(r, p.first, p.second);
        j[key(ratio_name(p))] = x ? nlohmann::ordered_json(*x) : nlohmann::ordered_json(nullptr);
      }
      out.push_back(std::move(j));
    }
    return out;
  }

  /// Prints the table, writes `header` with the rows added as JSON to `json_path`, and draws
  /// the chart titled `title` into `plot_path` (either skipped when its path is empty).
  template <class Json>
  void publish(Json header, const std::string& json_path, const std::string& plot_path,
               const std::string& title) const {
    print();
    header["rows"] = rows_json();
    if (!json_path.empty()) std::ofstream(json_path) << header.dump(2) << "\n";
    if (!plot_path.empty()) plot(plot_path, title);
  }

  /// The ratios as a bar chart (log scale; 1 = even), drawn by gnuplot into `path`.
  void plot(const std::string& path, const std::string& title) const {
    const auto data = path + ".dat";
    {
      std::ofstream d(data);
      int i = 0;
      for (const auto& r : rows) {
        std::string line;
        bool any = false;
        for (const auto& p : ratios) {
          const auto x = ratio(r, p.first, p.second);
          any = any || x.has_value();
          line += fmt::format(" {}", x.value_or(0));
        }
        if (!any) continue;
        d << i++ << " \"" << r.figure.substr(0, r.figure.find(" (")) << "\"" << line << "\n";
      }
    }
    std::string series;
    for (std::size_t k = 0; k < ratios.size(); ++k) {
      series += fmt::format("{} using {}{} title '{}', ", k == 0 ? fmt::format("'{}'", data) : "''",
                            k + 3, k == 0 ? ":xtic(2)" : "", ratio_name(ratios[k]));
    }
    const auto script = fmt::format(
        "set terminal pngcairo size 1100,560 noenhanced; set output '{}'; set title '{}';"
        "set logscale y; set yrange [0.01:100]; set grid y; set style data histograms;"
        "set style histogram cluster gap 1; set style fill solid 0.8; set boxwidth 0.9;"
        "set xtics rotate by -25 scale 0; set key top left; set rmargin 14;"
        "plot {}1 notitle lc rgb 'black'",
        path, title, series);
    child gnuplot({"/usr/bin/gnuplot", "-e", script});
    const int status = gnuplot.wait();
    std::filesystem::remove(data);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !std::filesystem::exists(path)) {
      die("gnuplot could not draw " + path + " (install gnuplot-nox)");
    }
    std::printf("plot: %s\n", path.c_str());
  }
};

}  // namespace qxa::bench
