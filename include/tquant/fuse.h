#pragma once

#include <ostream>
#include <string>
#include <vector>

#include <torch/nn/module.h>

namespace tquant {

/// What fuse did with the BatchNorm2d of a group.
///   kReplacedByIdentity: the BatchNorm2d was an entry of a torch::nn::Sequential (held by
///                        nothing else) and that entry, in the Sequential's own list and in its
///                        module registry, is now a torch::nn::Identity;
///   kIdentityInPlace:    the BatchNorm2d stays (a member field, or a Sequential entry also
///                        referenced elsewhere: a parent calls it through that reference) and
///                        is turned into an exact identity in eval mode: running_mean = 0,
///                        running_var = 1, eps = 0, weight = 1, bias = 0 (weight and bias
///                        frozen: requires_grad = false), so
///                        (x - 0) / sqrt(1 + 0) * 1 + 0 == x bit for bit.
///                        In train mode a BatchNorm normalizes by the batch statistics, which
///                        no setting turns off: keep such a model in eval mode, or hold the
///                        BatchNorm in a Sequential.
enum class BatchNormRemoval { kReplacedByIdentity, kIdentityInPlace };

/// "replaced by Identity" or "identity in place".
std::string to_string(BatchNormRemoval removal);

/// One fused group.
struct FusedGroup {
  std::vector<std::string> names;  ///< the group as given: conv, batch norm[, relu]
  std::string conv_type;           ///< "QuantConv2d" or "torch::nn::Conv2d"
  /// The conv had no bias: one was registered ("bias", same dtype, device and requires_grad as
  /// the weight) and options.bias() set to true.
  bool bias_added = false;
  BatchNormRemoval batch_norm = BatchNormRemoval::kReplacedByIdentity;
  /// The group names a ReLU. It is checked and stays a separate module after the conv (ReLU
  /// needs no folding to stay exact); fuse does not set QuantConv2dImpl::set_fused_relu, which
  /// a caller may set to run it inside the converted INT8 convolution.
  bool relu = false;
};

/// What fuse did. fuse prints nothing itself; print the report with operator<<.
struct FuseReport {
  std::vector<FusedGroup> groups;

  /// The group that names `name` (its conv, batch norm or ReLU), or nullptr.
  const FusedGroup* find_group(const std::string& name) const;

  /// Table (group, conv, bias, batch norm, relu) and a summary line "fuse: 2 groups fused
  /// (1 batch norm replaced by Identity, 1 identity in place)".
  std::string to_string() const;
};

std::ostream& operator<<(std::ostream& stream, const FuseReport& report);

/// Folds Conv2d + BatchNorm2d (+ ReLU) groups, in place, as torch.ao's fuse_modules does in
/// eval mode (fuse_conv_bn_eval). Each group lists qualified names of named_modules():
/// {conv, bn} or {conv, bn, relu}, where conv is a tquant::QuantConv2d or a torch::nn::Conv2d,
/// bn a torch::nn::BatchNorm2d with running statistics and relu a torch::nn::ReLU.
///
/// With s[c] = gamma[c] / sqrt(running_var[c] + eps) (gamma = 1, beta = 0 without affine):
///   w'[c] = w[c] * s[c]
///   b'[c] = (b[c] - running_mean[c]) * s[c] + beta[c]     (b = 0 when the conv had no bias)
/// computed in float64 and stored in the conv's dtype. The conv keeps its object (a parent's
/// member field still calls it): its weight and bias tensors are overwritten in place, and a
/// conv without bias gets one (see FusedGroup::bias_added). The BatchNorm2d is removed as
/// BatchNormRemoval says. The ReLU stays where it is.
///
/// Folding uses the running statistics, so the BatchNorm2d must be in eval mode (call
/// model->eval() first), as torch.ao requires. Fuse before prepare: a QuantConv2d must not have
/// a QConfig yet (its weight quantizer would hold the unfolded weight's range). Which modules
/// follow which in forward cannot be seen from C++; fuse checks the types, the channel counts
/// and, for entries of one Sequential, that they are consecutive in this order.
///
/// Every group is checked before anything changes: on error the model is unchanged, and the
/// message names the group, the module, what was expected and what was found.
///
/// Example:
///   auto features = torch::nn::Sequential(
///       torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 16, 3).padding(1).bias(false)),
///       torch::nn::BatchNorm2d(16), torch::nn::ReLU());
///   features->eval();
///   tquant::FuseReport report = tquant::fuse(*features, {{"0", "1", "2"}});
///   std::cout << report;   // batch norm "1" replaced by Identity; conv "0" now has a bias
///   // then: tquant::prepare(*features, mapping) turns the fused conv into a QuantConv2d
FuseReport fuse(torch::nn::Module& model, const std::vector<std::vector<std::string>>& groups);

}  // namespace tquant
