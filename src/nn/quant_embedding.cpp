#include "tquant/nn/quant_embedding.h"

#include <string>

#include <torch/nn/functional/embedding.h>
#include <torch/nn/init.h>
#include <torch/utils.h>

#include "converted_weight.h"
#include "quant_module_detail.h"

namespace tquant {

namespace {

namespace F = torch::nn::functional;

}  // namespace

QuantEmbeddingImpl::QuantEmbeddingImpl(const torch::nn::EmbeddingOptions& options_)
    : options(options_) {
  // NOLINTNEXTLINE(clang-analyzer-optin.cplusplus.VirtualCall): as torch::nn::EmbeddingImpl.
  QuantEmbeddingImpl::reset();
}

std::string QuantEmbeddingImpl::error_name() const {
  return "QuantEmbedding(num_embeddings=" + std::to_string(options.num_embeddings()) +
         ", embedding_dim=" + std::to_string(options.embedding_dim()) + ")";
}

QuantEmbedding QuantEmbeddingImpl::from_float(const torch::nn::Embedding& embedding) {
  TORCH_CHECK_VALUE(!embedding.is_empty(), "QuantEmbedding::from_float: expected a "
                    "torch::nn::Embedding, got an empty holder");
  auto options = embedding->options;
  // Without _weight: the copy below must not share (and overwrite) the torch module's tensor.
  options._weight(at::Tensor());
  QuantEmbedding result(options);
  torch::NoGradGuard no_grad;
  result->weight.set_data(embedding->weight.detach().clone());
  result->weight.set_requires_grad(embedding->weight.requires_grad());
  result->train(embedding->is_training());
  return result;
}

void QuantEmbeddingImpl::reset() {
  // torch::nn::EmbeddingImpl::reset: the same padding_idx rules and registration.
  if (options.padding_idx().has_value()) {
    const int64_t padding_idx = *options.padding_idx();
    TORCH_CHECK_VALUE(padding_idx < options.num_embeddings() &&
                          padding_idx >= -options.num_embeddings(),
                      error_name(), ": expected padding_idx in [", -options.num_embeddings(), ", ",
                      options.num_embeddings(), "), got ", padding_idx);
    if (padding_idx < 0) options.padding_idx(options.num_embeddings() + padding_idx);
  }
  if (mode_ == QuantMode::kConverted) {  // clone() of a converted module
    make_converted(converted_scheme_);
    return;
  }
  if (!options._weight().defined()) {
    weight = register_parameter(
        "weight", torch::empty({options.num_embeddings(), options.embedding_dim()}));
    reset_parameters();
  } else {
    TORCH_CHECK_VALUE(options._weight().sizes() ==
                          torch::IntArrayRef({options.num_embeddings(), options.embedding_dim()}),
                      error_name(), ": expected _weight of shape [", options.num_embeddings(), ", ",
                      options.embedding_dim(), "], got ", options._weight().sizes());
    weight = register_parameter("weight", options._weight());
  }
  restore_quantizers();
}

void QuantEmbeddingImpl::reset_parameters() {
  // torch::nn::EmbeddingImpl::reset_parameters: the same calls, so equal seeds give equal tables.
  torch::nn::init::normal_(weight);
  if (options.padding_idx().has_value()) {
    torch::NoGradGuard no_grad;
    weight[*options.padding_idx()].fill_(0);
  }
}

void QuantEmbeddingImpl::pretty_print(std::ostream& stream) const {
  stream << "tquant::QuantEmbedding(num_embeddings=" << options.num_embeddings()
         << ", embedding_dim=" << options.embedding_dim();
  if (options.padding_idx()) stream << ", padding_idx=" << *options.padding_idx();
  if (options.max_norm()) stream << ", max_norm=" << *options.max_norm();
  if (options.norm_type() != 2) stream << ", norm_type=" << options.norm_type();
  if (options.scale_grad_by_freq()) stream << ", scale_grad_by_freq=true";
  if (options.sparse()) stream << ", sparse=true";
  stream << ", mode=" << to_string(mode_) << ")";
}

void QuantEmbeddingImpl::check_module_qconfig(const QConfig& qconfig) const {
  // Checks a quantizer built from the factory (set_qconfig calls this before anything changes).
  if (qconfig.weight) detail::check_weight_axis0(qconfig.weight(), error_name(), "embedding row");
}

void QuantEmbeddingImpl::install_quantizers() {
  weight_quantizer = detail::install_quantizer(*this, "weight_quantizer", qconfig_->weight,
                                               weight.device(), error_name());
}

void QuantEmbeddingImpl::check_module_mode(QuantMode mode) const {
  TORCH_CHECK_NOT_IMPLEMENTED(mode != QuantMode::kFakeQuant || !options.sparse(), error_name(),
                              ": sparse = true is not supported in fake_quant mode (the "
                              "fake-quantize gradient of the table is dense)");
}

void QuantEmbeddingImpl::check_input(const at::Tensor& indices) const {
  TORCH_CHECK(indices.defined(), error_name(), ": expected an index tensor, got an undefined one");
  TORCH_CHECK(indices.scalar_type() == at::kLong || indices.scalar_type() == at::kInt, error_name(),
              ": expected indices of type Long or Int, got ", indices.scalar_type());
  if (indices.is_cpu() && indices.numel() > 0) {
    const int64_t low = indices.min().item<int64_t>();
    const int64_t high = indices.max().item<int64_t>();
    TORCH_CHECK_INDEX(low >= 0 && high < options.num_embeddings(), error_name(),
                      ": expected indices in [0, ", options.num_embeddings(), "), got values in [",
                      low, ", ", high, "]");
  }
}

at::Tensor QuantEmbeddingImpl::forward(const at::Tensor& indices) {
  check_input(indices);
  if (mode_ == QuantMode::kConverted) {
    const at::Tensor rows = indices.reshape({-1}).to(at::kLong);
    auto shape = indices.sizes().vec();
    shape.push_back(options.embedding_dim());
    return detail::dequantize_codes(weight_int8.index_select(0, rows),
                                    weight_scale.index_select(0, rows))
        .reshape(shape);
  }
  if (mode_ == QuantMode::kFloat || weight_quantizer.is_empty()) {
    return F::detail::embedding(indices, weight, options.padding_idx(), options.max_norm(),
                                options.norm_type(), options.scale_grad_by_freq(),
                                options.sparse());
  }
  if (options.max_norm()) {
    // As F::embedding does to its weight: renormalize the looked-up rows of the float table.
    F::detail::_no_grad_embedding_renorm_(weight, indices.contiguous(),
                                          static_cast<float>(*options.max_norm()),
                                          static_cast<float>(options.norm_type()));
  }
  // kObserve: the quantizer records the table and returns it; kFakeQuant: QDQ(table).
  const at::Tensor w = weight_quantizer(weight);
  return F::detail::embedding(indices, w, options.padding_idx(), /*max_norm=*/std::nullopt,
                              options.norm_type(), options.scale_grad_by_freq(),
                              options.sparse());
}

ConvertResult QuantEmbeddingImpl::convert() {
  if (mode_ == QuantMode::kConverted) return {true, converted_scheme_, ""};
  if (!qconfig_ || mode_ == QuantMode::kFloat || weight_quantizer.is_empty()) {
    return {false, "", "in float mode (not prepared, or disabled)"};
  }
  if (options.max_norm()) {
    return {false, "", "max_norm renormalizes the float table at every lookup; stays " +
                           to_string(mode_)};
  }
  std::string reason;
  auto codes = detail::weight_codes(*weight_quantizer, weight, &reason);
  if (!codes) return {false, "", reason};
  install_converted(detail::format_scheme("weight_only", codes->block), codes->codes,
                    codes->scale);
  return {true, converted_scheme_, ""};
}

void QuantEmbeddingImpl::make_converted(const std::string& scheme) {
  const auto parsed = detail::parse_scheme(scheme, {"weight_only"}, error_name());
  auto codes = detail::placeholder_codes(options.num_embeddings(), options.embedding_dim(),
                                         parsed.block, error_name());
  const auto device = weight.defined() ? weight.device() : at::Device(at::kCPU);
  install_converted(scheme, codes.codes.to(device), codes.scale.to(device));
}

void QuantEmbeddingImpl::install_converted(const std::string& scheme, at::Tensor codes,
                                           at::Tensor scale) {
  if (parameters_.contains("weight")) parameters_.erase("weight");
  weight = at::Tensor();
  detail::unregister_quantizer(*this, "weight_quantizer", weight_quantizer);
  weight_int8 = detail::set_buffer(*this, "weight_int8", std::move(codes));
  weight_scale = detail::set_buffer(*this, "weight_scale", std::move(scale));
  mode_ = QuantMode::kConverted;
  converted_scheme_ = scheme;
}

}  // namespace tquant
