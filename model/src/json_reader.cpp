// Strict JSON reading with messages that name the key path, the value and the reason.
#include "cpsim/model/json_reader.hpp"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace cpsim {

Json load_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in)
    throw UserError("cannot open '" + path + "': no such file or not readable");
  try {
    return Json::parse(in);
  } catch (const Json::parse_error& e) {
    throw UserError("'" + path + "' is not valid JSON: " + e.what());
  }
}

void save_json_file(const std::string& path, const Json& j, int indent) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    if (!out)
      throw UserError("cannot write '" + path + "': directory missing or not writable");
    out << j.dump(indent) << "\n";
    if (!out)
      throw UserError("error while writing '" + path + "'");
  }
  std::filesystem::rename(tmp, path);
}

std::string json_value_text(const Json& v) {
  std::string s = v.dump();
  if (s.size() > 80)
    s = s.substr(0, 77) + "...";
  return s;
}

JsonObjectReader::JsonObjectReader(const Json& j, std::string path) : j_(j), path_(std::move(path)) {
  if (!j_.is_object())
    throw UserError("'" + (path_.empty() ? std::string("<top level>") : path_) + "' must be a JSON object, got " +
                    json_value_text(j_));
}

bool JsonObjectReader::has(const std::string& key) const { return j_.contains(key); }

void JsonObjectReader::fail(const std::string& key, const std::string& reason) const {
  std::string msg = "'" + path_of(key) + "'";
  if (j_.contains(key))
    msg += " = " + json_value_text(j_.at(key));
  throw UserError(msg + ": " + reason);
}

const Json& JsonObjectReader::raw(const std::string& key) {
  if (!j_.contains(key))
    throw UserError("'" + path_of(key) + "' is missing (required)");
  used_.insert(key);
  return j_.at(key);
}

std::string JsonObjectReader::get_string(const std::string& key) {
  const Json& v = raw(key);
  if (!v.is_string())
    fail(key, "must be a string");
  return v.get<std::string>();
}

std::string JsonObjectReader::get_string_or(const std::string& key, const std::string& fallback) {
  return has(key) ? get_string(key) : fallback;
}

std::string JsonObjectReader::get_enum(const std::string& key, const std::vector<std::string>& allowed) {
  std::string s = get_string(key);
  for (const auto& a : allowed)
    if (a == s)
      return s;
  std::string list;
  for (const auto& a : allowed)
    list += (list.empty() ? "" : ", ") + a;
  fail(key, "must be one of: " + list);
}

int64_t JsonObjectReader::get_int(const std::string& key, int64_t min, int64_t max) {
  const Json& v = raw(key);
  int64_t x = 0;
  if (v.is_number_integer()) {
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      fail(key, "is too large");
    x = v.get<int64_t>();
  } else if (v.is_number_float()) {
    double d = v.get<double>();
    if (!std::isfinite(d) || d != std::floor(d) || std::fabs(d) > 9.0e15)
      fail(key, "must be an integer");
    x = static_cast<int64_t>(d);
  } else {
    fail(key, "must be an integer");
  }
  if (x < min)
    fail(key, "must be at least " + std::to_string(min));
  if (x > max)
    fail(key, "must be at most " + std::to_string(max));
  return x;
}

int64_t JsonObjectReader::get_int_or(const std::string& key, int64_t fallback, int64_t min, int64_t max) {
  return has(key) ? get_int(key, min, max) : fallback;
}

double JsonObjectReader::get_number(const std::string& key, double min, double max) {
  const Json& v = raw(key);
  if (!v.is_number())
    fail(key, "must be a number");
  double d = v.get<double>();
  if (!std::isfinite(d))
    fail(key, "must be finite");
  if (d < min) {
    std::ostringstream os;
    os << "must be at least " << min;
    fail(key, os.str());
  }
  if (d > max) {
    std::ostringstream os;
    os << "must be at most " << max;
    fail(key, os.str());
  }
  return d;
}

double JsonObjectReader::get_number_or(const std::string& key, double fallback, double min, double max) {
  return has(key) ? get_number(key, min, max) : fallback;
}

bool JsonObjectReader::get_bool_or(const std::string& key, bool fallback) {
  if (!has(key))
    return fallback;
  const Json& v = raw(key);
  if (!v.is_boolean())
    fail(key, "must be true or false");
  return v.get<bool>();
}

std::vector<std::string> JsonObjectReader::get_string_array(const std::string& key) {
  const Json& v = raw(key);
  if (!v.is_array())
    fail(key, "must be an array of strings");
  std::vector<std::string> out;
  for (const Json& e : v) {
    if (!e.is_string())
      fail(key, "must be an array of strings");
    out.push_back(e.get<std::string>());
  }
  return out;
}

std::vector<int64_t> JsonObjectReader::get_int_array(const std::string& key, int64_t min, int64_t max) {
  const Json& v = raw(key);
  if (!v.is_array() || v.empty())
    fail(key, "must be a non-empty array of integers");
  std::vector<int64_t> out;
  for (size_t i = 0; i < v.size(); ++i) {
    const Json& e = v[i];
    std::string where = path_of(key) + "[" + std::to_string(i) + "]";
    if (!e.is_number_integer())
      throw UserError("'" + where + "' = " + json_value_text(e) + ": must be an integer");
    int64_t x = e.get<int64_t>();
    if (x < min || x > max)
      throw UserError("'" + where + "' = " + std::to_string(x) + ": must be in [" + std::to_string(min) + ", " +
                      std::to_string(max) + "]");
    out.push_back(x);
  }
  return out;
}

JsonObjectReader JsonObjectReader::get_object(const std::string& key) {
  const Json& v = raw(key);
  if (!v.is_object())
    fail(key, "must be a JSON object");
  return JsonObjectReader(v, path_of(key));
}

void JsonObjectReader::finish() const {
  for (auto it = j_.begin(); it != j_.end(); ++it)
    if (!used_.count(it.key()))
      throw UserError("'" + path_of(it.key()) + "' is not a known key" +
                      (path_.empty() ? std::string() : " of '" + path_ + "'") + " (see docs/scenario.md)");
}

} // namespace cpsim
