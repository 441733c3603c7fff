// save / load of QTensors in safetensors (include/frugal/quant/quantize.hpp): three tensors per
// name plus a JSON record of the spec and shape in the metadata.
#include <nlohmann/json.hpp>
#include <string>

#include "frugal/core/io.hpp"
#include "frugal/quant/quantize.hpp"
#include "quant/quant_internal.hpp"

namespace frugal::quant {
namespace {

constexpr const char* kRecordPrefix = "frugal.quant.";

const char* granularity_name(Granularity g) {
  switch (g) {
    case Granularity::kPerTensor:
      return "per_tensor";
    case Granularity::kPerChannel:
      return "per_channel";
    case Granularity::kPerGroup:
      return "per_group";
  }
  return "?";
}

std::string record_of(const QTensor& q) {
  nlohmann::json j;
  j["format"] = "linear";
  j["bits"] = q.spec.bits;
  j["symmetric"] = q.spec.symmetric;
  j["signed"] = q.spec.is_signed;
  j["narrow_range"] = q.spec.narrow_range;
  j["granularity"] = granularity_name(q.spec.granularity);
  j["axis"] = q.spec.axis;
  j["group_size"] = q.spec.group_size;
  j["rounding"] = q.spec.rounding == Rounding::kHalfEven ? "half_even" : "stochastic";
  j["shape"] = std::vector<int64_t>(q.shape.begin(), q.shape.end());
  return j.dump();
}

[[noreturn]] void bad(const std::string& name, const std::string& why) {
  frugal::detail::fail(ErrorCode::kIoError, "load_qtensors", "quantized tensor '", name,
                       "': ", why);
}

QTensor parse_record(const std::string& name, const std::string& text,
                     std::map<std::string, Tensor>& tensors) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    bad(name, std::string("metadata record is not JSON: ") + e.what());
  }
  QTensor q;
  try {
    if (j.at("format").get<std::string>() != "linear") bad(name, "unknown format");
    q.spec.bits = j.at("bits").get<int>();
    q.spec.symmetric = j.at("symmetric").get<bool>();
    q.spec.is_signed = j.at("signed").get<bool>();
    q.spec.narrow_range = j.at("narrow_range").get<bool>();
    const std::string g = j.at("granularity").get<std::string>();
    if (g == "per_tensor") {
      q.spec.granularity = Granularity::kPerTensor;
    } else if (g == "per_channel") {
      q.spec.granularity = Granularity::kPerChannel;
    } else if (g == "per_group") {
      q.spec.granularity = Granularity::kPerGroup;
    } else {
      bad(name, "unknown granularity '" + g + "'");
    }
    q.spec.axis = j.at("axis").get<int>();
    q.spec.group_size = j.at("group_size").get<int64_t>();
    const std::string r = j.at("rounding").get<std::string>();
    if (r != "half_even" && r != "stochastic") bad(name, "unknown rounding '" + r + "'");
    q.spec.rounding = r == "half_even" ? Rounding::kHalfEven : Rounding::kStochastic;
    const auto dims = j.at("shape").get<std::vector<int64_t>>();
    if (dims.size() > static_cast<std::size_t>(kMaxRank)) bad(name, "shape has too many axes");
    for (int64_t d : dims) {
      if (d < 0) bad(name, "negative extent in shape");
    }
    q.shape = Shape(dims.begin(), dims.end());
  } catch (const nlohmann::json::exception& e) {
    bad(name, std::string("bad metadata record: ") + e.what());
  }
  auto take = [&](const std::string& suffix) {
    auto it = tensors.find(name + suffix);
    if (it == tensors.end()) bad(name, "missing tensor '" + name + suffix + "'");
    Tensor t = it->second;
    tensors.erase(it);
    return t;
  };
  q.codes = take(".codes");
  q.qparams.scale = take(".scale");
  q.qparams.zero_point = take(".zero_point");
  // Everything else (bits, shapes, dtypes, parameter values) is what dequantize checks; report it
  // as a file error here.
  try {
    detail::check_spec("load_qtensors", q.spec);
    if (q.shape.numel() == 0) bad(name, "empty shape");
    if (q.codes.dtype() != code_dtype(q.spec.bits, q.spec.is_signed)) {
      bad(name, std::string("codes have dtype ") + std::string(dtype_name(q.codes.dtype())));
    }
    if (!(q.codes.shape() == codes_shape(q.shape, q.spec))) bad(name, "codes have the wrong shape");
    (void)detail::check_linear("load_qtensors", q.shape, Device::cpu(), q.spec, q.qparams);
  } catch (const Error& e) {
    if (e.code() == ErrorCode::kIoError) throw;
    bad(name, e.what());
  }
  return q;
}

}  // namespace

void save_qtensors(const std::string& path, const std::map<std::string, QTensor>& tensors,
                   const std::map<std::string, std::string>& metadata) {
  const char* op = "save_qtensors";
  std::map<std::string, Tensor> out;
  std::map<std::string, std::string> meta;
  for (const auto& [key, value] : metadata) {
    FRUGAL_REQUIRE(key.rfind("frugal.", 0) != 0, op, "metadata key '", key,
                   "' uses the reserved prefix 'frugal.'");
    meta[key] = value;
  }
  for (const auto& [name, q] : tensors) {
    FRUGAL_REQUIRE(!name.empty(), op, "empty tensor name");
    FRUGAL_REQUIRE(q.codes.defined() && q.qparams.scale.defined() && q.qparams.zero_point.defined(),
                   op, "quantized tensor '", name, "' has undefined parts");
    out[name + ".codes"] = q.codes;
    out[name + ".scale"] = q.qparams.scale;
    out[name + ".zero_point"] = q.qparams.zero_point;
    meta[kRecordPrefix + name] = record_of(q);
  }
  save_safetensors(path, out, meta);
}

std::map<std::string, QTensor> load_qtensors(const std::string& path,
                                             std::map<std::string, std::string>* metadata) {
  SafetensorsFile f = load_safetensors(path);
  std::map<std::string, QTensor> result;
  const std::string prefix = kRecordPrefix;
  for (const auto& [key, value] : f.metadata) {
    if (key.rfind(prefix, 0) == 0) {
      const std::string name = key.substr(prefix.size());
      result[name] = parse_record(name, value, f.tensors);
    } else if (metadata != nullptr && key.rfind("frugal.", 0) != 0) {
      (*metadata)[key] = value;
    }
  }
  return result;
}

void save_qtensor(const std::string& path, const QTensor& q) { save_qtensors(path, {{"q", q}}); }

QTensor load_qtensor(const std::string& path) {
  auto all = load_qtensors(path);
  auto it = all.find("q");
  if (it == all.end()) {
    frugal::detail::fail(ErrorCode::kIoError, "load_qtensor", "no quantized tensor 'q' in ", path);
  }
  return it->second;
}

}  // namespace frugal::quant
