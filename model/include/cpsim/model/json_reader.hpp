// Strict reading of user JSON: every key is checked for presence, type and range, and every key
// the reader did not consume is rejected. Errors name the full key path, the value and the reason,
// so that no bad input is silently defaulted.
#pragma once

#include "cpsim/model/errors.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <limits>
#include <set>
#include <string>
#include <vector>

namespace cpsim {

using Json = nlohmann::json;

/** Loads and parses a JSON file; UserError naming the file on a missing file or a syntax error. */
Json load_json_file(const std::string& path);
/**
 * Writes `j` (dump(indent)) whole or not at all: a temporary file renamed into place, so a failed
 * run never leaves a half-written result. UserError naming the path when it cannot be written.
 */
void save_json_file(const std::string& path, const Json& j, int indent);

class JsonObjectReader {
public:
  /** @param path dotted location of this object, used in messages (e.g. "workload.mask"). */
  JsonObjectReader(const Json& j, std::string path);

  bool has(const std::string& key) const;
  const Json& raw(const std::string& key);  // marks key used; UserError if missing
  std::string path_of(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

  std::string get_string(const std::string& key);
  std::string get_string_or(const std::string& key, const std::string& fallback);
  std::string get_enum(const std::string& key, const std::vector<std::string>& allowed);
  int64_t get_int(const std::string& key, int64_t min = std::numeric_limits<int64_t>::min(),
                  int64_t max = std::numeric_limits<int64_t>::max());
  int64_t get_int_or(const std::string& key, int64_t fallback, int64_t min = std::numeric_limits<int64_t>::min(),
                     int64_t max = std::numeric_limits<int64_t>::max());
  double get_number(const std::string& key, double min = -std::numeric_limits<double>::infinity(),
                    double max = std::numeric_limits<double>::infinity());
  double get_number_or(const std::string& key, double fallback, double min = -std::numeric_limits<double>::infinity(),
                       double max = std::numeric_limits<double>::infinity());
  bool get_bool_or(const std::string& key, bool fallback);
  std::vector<int64_t> get_int_array(const std::string& key, int64_t min, int64_t max);
  std::vector<std::string> get_string_array(const std::string& key); // may be empty
  JsonObjectReader get_object(const std::string& key);

  /** Rejects every key that was not read. Call once all keys are consumed. */
  void finish() const;

  [[noreturn]] void fail(const std::string& key, const std::string& reason) const;

private:
  const Json& j_;
  std::string path_;
  std::set<std::string> used_;
};

std::string json_value_text(const Json& v);

} // namespace cpsim
