#include "tquant/safetensors.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <utility>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

namespace tquant {

namespace {

using nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;  // as the reference reader's limit
constexpr const char* kMetadataKey = "__metadata__";

const std::vector<std::pair<std::string, c10::ScalarType>>& dtype_table() {
  static const std::vector<std::pair<std::string, c10::ScalarType>> table = {
      {"F64", c10::kDouble},   {"F32", c10::kFloat},
      {"F16", c10::kHalf},     {"BF16", c10::kBFloat16},
      {"I64", c10::kLong},     {"I32", c10::kInt},
      {"I16", c10::kShort},    {"I8", c10::kChar},
      {"U8", c10::kByte},      {"BOOL", c10::kBool},
      {"F8_E4M3", c10::kFloat8_e4m3fn}, {"F8_E5M2", c10::kFloat8_e5m2}};
  return table;
}

struct Entry {
  std::string name;
  c10::ScalarType type;
  std::vector<int64_t> shape;
  uint64_t begin;
  uint64_t end;
};

uint64_t element_count(const std::vector<int64_t>& shape, const std::string& what,
                       const std::string& name) {
  uint64_t count = 1;
  for (int64_t size : shape) {
    TORCH_CHECK_VALUE(size >= 0, what, ": tensor '", name, "' has a negative dimension");
    TORCH_CHECK_VALUE(size == 0 || count <= std::numeric_limits<uint64_t>::max() /
                                                 static_cast<uint64_t>(size),
                      what, ": tensor '", name, "' has a shape too large to address");
    count *= static_cast<uint64_t>(size);
  }
  return count;
}

Entry parse_entry(const std::string& name, const json& value, const std::string& what) {
  TORCH_CHECK_VALUE(value.is_object(), what, ": header entry '", name, "' is not an object");
  TORCH_CHECK_VALUE(value.contains("dtype") && value["dtype"].is_string(), what, ": tensor '",
                    name, "' has no dtype string");
  TORCH_CHECK_VALUE(value.contains("shape") && value["shape"].is_array(), what, ": tensor '",
                    name, "' has no shape array");
  TORCH_CHECK_VALUE(value.contains("data_offsets") && value["data_offsets"].is_array() &&
                        value["data_offsets"].size() == 2,
                    what, ": tensor '", name, "' needs data_offsets [begin, end]");
  Entry entry;
  entry.name = name;
  try {
    entry.type = scalar_type_from_safetensors(value["dtype"].get<std::string>());
  } catch (const c10::TypeError& error) {
    TORCH_CHECK_TYPE(false, what, ": tensor '", name, "': ", error.what_without_backtrace());
  }
  for (const auto& size : value["shape"]) {
    TORCH_CHECK_VALUE(size.is_number_unsigned() || (size.is_number_integer() && size >= 0), what,
                      ": tensor '", name, "' has a shape entry that is not a size: ", size.dump());
    entry.shape.push_back(size.get<int64_t>());
  }
  for (const auto& offset : value["data_offsets"]) {
    TORCH_CHECK_VALUE(offset.is_number_unsigned() || (offset.is_number_integer() && offset >= 0),
                      what, ": tensor '", name, "' has a data offset that is not an index: ",
                      offset.dump());
  }
  entry.begin = value["data_offsets"][0].get<uint64_t>();
  entry.end = value["data_offsets"][1].get<uint64_t>();
  TORCH_CHECK_VALUE(entry.begin <= entry.end, what, ": tensor '", name, "' has data_offsets [",
                    entry.begin, ", ", entry.end, "] with begin > end");
  const uint64_t expected =
      element_count(entry.shape, what, name) * c10::elementSize(entry.type);
  TORCH_CHECK_VALUE(entry.end - entry.begin == expected, what, ": tensor '", name, "' of shape ",
                    at::IntArrayRef(entry.shape), " and dtype ", value["dtype"].get<std::string>(),
                    " needs ", expected, " bytes, its offsets span ", entry.end - entry.begin);
  return entry;
}

}  // namespace

std::string safetensors_dtype_name(c10::ScalarType type) {
  for (const auto& [name, t] : dtype_table()) {
    if (t == type) return name;
  }
  TORCH_CHECK_TYPE(false, "safetensors: no safetensors dtype for LibTorch type ", type);
}

c10::ScalarType scalar_type_from_safetensors(const std::string& name) {
  for (const auto& [n, type] : dtype_table()) {
    if (n == name) return type;
  }
  TORCH_CHECK_TYPE(false, "safetensors: unsupported dtype '", name, "'");
}

SafetensorsFile parse_safetensors(const std::vector<char>& bytes, const std::string& what) {
  TORCH_CHECK_VALUE(bytes.size() >= 8, what, ": ", bytes.size(),
                    " bytes is shorter than the 8-byte header length; not a safetensors file");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) {
    header_len = (header_len << 8) | static_cast<uint8_t>(bytes[i]);
  }
  TORCH_CHECK_VALUE(header_len <= kMaxHeaderBytes && header_len <= bytes.size() - 8, what,
                    ": header length ", header_len, " does not fit in a file of ", bytes.size(),
                    " bytes (truncated or not a safetensors file)");
  json header;
  try {
    header = json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<int64_t>(header_len));
  } catch (const json::exception& error) {
    TORCH_CHECK_VALUE(false, what, ": the header is not valid JSON: ", error.what());
  }
  TORCH_CHECK_VALUE(header.is_object(), what, ": the header is not a JSON object");

  SafetensorsFile file;
  std::vector<Entry> entries;
  for (const auto& [key, value] : header.items()) {
    if (key == kMetadataKey) {
      TORCH_CHECK_VALUE(value.is_object(), what, ": __metadata__ is not an object");
      for (const auto& [meta_key, meta_value] : value.items()) {
        TORCH_CHECK_VALUE(meta_value.is_string(), what, ": metadata '", meta_key,
                          "' is not a string");
        file.metadata[meta_key] = meta_value.get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(key, value, what));
  }

  const uint64_t data_size = bytes.size() - 8 - header_len;
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
  uint64_t covered = 0;
  for (const auto& entry : entries) {
    TORCH_CHECK_VALUE(entry.begin == covered, what, ": tensor '", entry.name,
                      "' starts at byte ", entry.begin, " of the data section, expected ",
                      covered, " (overlapping tensors or a gap)");
    TORCH_CHECK_VALUE(entry.end <= data_size, what, ": tensor '", entry.name, "' ends at byte ",
                      entry.end, " but the data section has ", data_size,
                      " bytes (truncated file)");
    covered = entry.end;
  }
  TORCH_CHECK_VALUE(covered == data_size, what, ": the data section has ", data_size,
                    " bytes but the tensors cover ", covered);

  const char* data = bytes.data() + 8 + header_len;
  for (const auto& entry : entries) {
    auto tensor = at::empty(entry.shape, at::TensorOptions().dtype(entry.type));
    if (entry.end > entry.begin) {
      std::memcpy(tensor.data_ptr(), data + entry.begin, entry.end - entry.begin);
    }
    file.tensors.emplace(entry.name, std::move(tensor));
  }
  return file;
}

SafetensorsFile read_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK_VALUE(in.good(), "safetensors: cannot open '", path, "' for reading");
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return parse_safetensors(bytes, "safetensors file '" + path + "'");
}

std::vector<char> serialize_safetensors(const std::map<std::string, at::Tensor>& tensors,
                                        const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header[kMetadataKey] = metadata;
  std::vector<at::Tensor> contiguous;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    TORCH_CHECK_VALUE(!name.empty() && name != kMetadataKey,
                      "safetensors: invalid tensor name '", name, "'");
    TORCH_CHECK_VALUE(tensor.defined(), "safetensors: tensor '", name, "' is undefined");
    auto t = tensor.detach().to(at::kCPU).contiguous();
    const uint64_t size = static_cast<uint64_t>(t.numel()) * t.element_size();
    header[name] = {{"dtype", safetensors_dtype_name(t.scalar_type())},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + size}}};
    offset += size;
    contiguous.push_back(std::move(t));
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // data starts 8-byte aligned, as safetensors does
  std::vector<char> bytes(8 + text.size() + offset);
  uint64_t header_len = text.size();
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header_len >> (8 * i)) & 0xff);
  std::memcpy(bytes.data() + 8, text.data(), text.size());
  char* data = bytes.data() + 8 + text.size();
  for (const auto& t : contiguous) {
    const size_t size = static_cast<size_t>(t.numel()) * t.element_size();
    if (size > 0) std::memcpy(data, t.data_ptr(), size);
    data += size;
  }
  return bytes;
}

void write_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const auto bytes = serialize_safetensors(tensors, metadata);
  const std::string temporary = path + ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    TORCH_CHECK_VALUE(out.good(), "safetensors: cannot open '", temporary, "' for writing");
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    TORCH_CHECK_VALUE(out.good(), "safetensors: writing '", temporary, "' failed");
  }
  TORCH_CHECK_VALUE(std::rename(temporary.c_str(), path.c_str()) == 0,
                    "safetensors: cannot move '", temporary, "' to '", path, "'");
}

}  // namespace tquant
