#include "tquant/fuse.h"

#include <cstdint>
#include <memory>
#include <set>
#include <sstream>
#include <utility>

#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/ordered_dict.h>
#include <torch/utils.h>

#include "tquant/nn/quant_conv2d.h"
#include "tquant/qconfig_mapping.h"

namespace tquant {

namespace {

namespace nn = torch::nn;

/// LibTorch registers "bias" as an undefined parameter when a conv has no bias, and Module has
/// no public way to define a registered parameter afterwards (register_parameter refuses an
/// existing name; Python's fuse_conv_bn_eval simply assigns conv.bias). This reaches the
/// protected registry through a pointer to member formed in a derived class, which the
/// language allows for protected members, so the conv object itself never changes.
class ParameterRegistry : public nn::Module {
 public:
  static torch::OrderedDict<std::string, at::Tensor>& of(nn::Module& module) {
    return module.*(&ParameterRegistry::parameters_);
  }
};

std::string group_text(const std::vector<std::string>& names) {
  std::string text = "{";
  for (size_t i = 0; i < names.size(); ++i) {
    text += (i == 0 ? "'" : ", '") + names[i] + "'";
  }
  return text + "}";
}

/// A module found by qualified name, with the module that registered it.
struct Located {
  std::shared_ptr<nn::Module> module;
  nn::Module* parent = nullptr;
  std::string key;  ///< its name in the parent's registry
};

/// Walks named_children() one dotted component at a time; nullptr module when absent.
Located locate(nn::Module& model, const std::string& name) {
  Located found;
  nn::Module* current = &model;
  size_t start = 0;
  while (start <= name.size()) {
    const size_t dot = name.find('.', start);
    const std::string key = name.substr(start, dot == std::string::npos ? dot : dot - start);
    const auto children = current->named_children();
    if (!children.contains(key)) return {};
    found = {children[key], current, key};
    current = found.module.get();
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return found;
}

/// Position of `child` in `sequential`'s own list, or -1.
int64_t index_in(nn::SequentialImpl& sequential, const nn::Module* child) {
  for (size_t i = 0; i < sequential.size(); ++i) {
    if (sequential.ptr(i).get() == child) return static_cast<int64_t>(i);
  }
  return -1;
}

/// A checked group, ready to fold.
struct Plan {
  FusedGroup report;
  Located conv;
  Located bn;
  Located relu;
};

/// Output channels of a conv; sets `type`; throws for anything but the two conv types.
int64_t check_conv(const Located& conv, const std::string& name, const std::string& group,
                   std::string* type) {
  if (auto* quant = dynamic_cast<QuantConv2dImpl*>(conv.module.get())) {
    TORCH_CHECK_VALUE(!quant->qconfig().has_value(), "fuse: group ", group, ": expected '", name,
                      "' to be a QuantConv2d without a QConfig (fuse before prepare: the weight "
                      "quantizer would keep the unfolded weight's range), got one in mode ",
                      to_string(quant->mode()));
    *type = quant->quant_type_name();
    return quant->options.out_channels();
  }
  if (auto* plain = dynamic_cast<nn::Conv2dImpl*>(conv.module.get())) {
    *type = torch_type_name(*plain);
    return plain->options.out_channels();
  }
  TORCH_CHECK_VALUE(false, "fuse: group ", group, ": expected '", name,
                    "' (first) to be a tquant::QuantConv2d or torch::nn::Conv2d, got ",
                    torch_type_name(*conv.module));
  return 0;
}

Plan check_group(nn::Module& model, const std::vector<std::string>& names) {
  const std::string group = group_text(names);
  TORCH_CHECK_VALUE(names.size() == 2 || names.size() == 3, "fuse: group ", group,
                    ": expected 2 or 3 names (conv, batch norm[, relu]), got ", names.size());
  std::vector<Located> found;
  for (const std::string& name : names) {
    TORCH_CHECK_VALUE(!name.empty(), "fuse: group ", group,
                      ": expected qualified module names, got '' (the model itself)");
    found.push_back(locate(model, name));
    TORCH_CHECK_VALUE(found.back().module != nullptr, "fuse: group ", group,
                      ": expected a module named '", name,
                      "' in the model (names of named_modules(), e.g. 'features.0'), got none");
  }
  Plan plan;
  plan.report.names = names;
  plan.conv = found[0];
  plan.bn = found[1];
  const int64_t channels = check_conv(plan.conv, names[0], group, &plan.report.conv_type);

  auto* bn = dynamic_cast<nn::BatchNorm2dImpl*>(plan.bn.module.get());
  TORCH_CHECK_VALUE(bn != nullptr, "fuse: group ", group, ": expected '", names[1],
                    "' (second) to be a torch::nn::BatchNorm2d, got ",
                    torch_type_name(*plan.bn.module));
  TORCH_CHECK_VALUE(bn->options.track_running_stats(), "fuse: group ", group, ": expected '",
                    names[1], "' to track running statistics (folding uses them), got "
                    "track_running_stats = false");
  TORCH_CHECK_VALUE(!bn->is_training(), "fuse: group ", group, ": expected '", names[1],
                    "' in eval mode (folding uses the running statistics, as torch.ao's "
                    "fuse_modules does; call model->eval() first), got training mode");
  TORCH_CHECK_VALUE(bn->options.num_features() == channels, "fuse: group ", group,
                    ": expected '", names[1], "' to have num_features = ", channels,
                    " (out_channels of '", names[0], "'), got ", bn->options.num_features());

  if (names.size() == 3) {
    plan.relu = found[2];
    TORCH_CHECK_VALUE(dynamic_cast<nn::ReLUImpl*>(plan.relu.module.get()) != nullptr,
                      "fuse: group ", group, ": expected '", names[2],
                      "' (third) to be a torch::nn::ReLU, got ",
                      torch_type_name(*plan.relu.module));
    plan.report.relu = true;
  }

  // Entries of one Sequential run in list order: they must be consecutive, conv first.
  for (size_t i = 1; i < found.size(); ++i) {
    auto* sequential = dynamic_cast<nn::SequentialImpl*>(found[i].parent);
    if (sequential == nullptr || found[i - 1].parent != found[i].parent) continue;
    const int64_t before = index_in(*sequential, found[i - 1].module.get());
    const int64_t at = index_in(*sequential, found[i].module.get());
    TORCH_CHECK_VALUE(before >= 0 && at == before + 1, "fuse: group ", group, ": expected '",
                      names[i], "' to follow '", names[i - 1],
                      "' directly in their Sequential, got positions ", before, " and ", at);
  }
  return plan;
}

/// Writes the folded weight and bias into the conv (see fuse's formula).
template <typename Conv>
bool fold(Conv& conv, const nn::BatchNorm2dImpl& bn) {
  torch::NoGradGuard no_grad;
  const auto as_double = [&](const at::Tensor& t) {
    return t.detach().to(conv.weight.device(), at::kDouble);
  };
  const int64_t channels = conv.weight.size(0);
  const at::Tensor gamma = bn.weight.defined()
                               ? as_double(bn.weight)
                               : at::ones({channels}, conv.weight.options().dtype(at::kDouble));
  const at::Tensor beta = bn.bias.defined() ? as_double(bn.bias) : at::zeros_like(gamma);
  const at::Tensor s = gamma * at::rsqrt(as_double(bn.running_var) + bn.options.eps());
  const at::Tensor b = conv.bias.defined() ? as_double(conv.bias) : at::zeros_like(gamma);
  const at::Tensor folded_bias = (b - as_double(bn.running_mean)) * s + beta;

  conv.weight.copy_(as_double(conv.weight) * s.reshape({-1, 1, 1, 1}));
  if (conv.bias.defined()) {
    conv.bias.copy_(folded_bias);
    return false;
  }
  at::Tensor bias = folded_bias.to(conv.weight.dtype());
  bias.set_requires_grad(conv.weight.requires_grad());
  ParameterRegistry::of(conv)["bias"] = bias;  // same tensor as the member handle
  conv.bias = bias;
  conv.options.bias(true);  // so clone() and reset() register it
  return true;
}

/// Turns a BatchNorm2d into an exact identity in eval mode (see BatchNormRemoval).
void make_identity(nn::BatchNorm2dImpl& bn) {
  torch::NoGradGuard no_grad;
  bn.options.eps(0.0);
  bn.running_mean.zero_();
  bn.running_var.fill_(1.0);
  if (bn.weight.defined()) {
    bn.weight.fill_(1.0);
    bn.weight.set_requires_grad(false);
  }
  if (bn.bias.defined()) {
    bn.bias.zero_();
    bn.bias.set_requires_grad(false);
  }
}

void apply(Plan& plan) {
  auto& bn = dynamic_cast<nn::BatchNorm2dImpl&>(*plan.bn.module);
  if (auto* quant = dynamic_cast<QuantConv2dImpl*>(plan.conv.module.get())) {
    plan.report.bias_added = fold(*quant, bn);
  } else {
    plan.report.bias_added = fold(dynamic_cast<nn::Conv2dImpl&>(*plan.conv.module), bn);
  }

  auto* sequential = dynamic_cast<nn::SequentialImpl*>(plan.bn.parent);
  const int64_t index =
      sequential == nullptr ? -1 : index_in(*sequential, plan.bn.module.get());
  // Owners when only the Sequential holds it: its list, its registry and plan.bn.
  constexpr long kSequentialOwners = 3;
  if (index < 0 || plan.bn.module.use_count() != kSequentialOwners) {
    make_identity(bn);
    plan.report.batch_norm = BatchNormRemoval::kIdentityInPlace;
    return;
  }
  nn::Identity identity;
  identity->train(bn.is_training());
  plan.bn.module.reset();
  *(sequential->begin() + index) = nn::AnyModule(identity);
  sequential->replace_module(plan.bn.key, identity.ptr());
  plan.report.batch_norm = BatchNormRemoval::kReplacedByIdentity;
}

}  // namespace

std::string to_string(BatchNormRemoval removal) {
  switch (removal) {
    case BatchNormRemoval::kReplacedByIdentity:
      return "replaced by Identity";
    case BatchNormRemoval::kIdentityInPlace:
      return "identity in place";
  }
  return "unknown";
}

FuseReport fuse(torch::nn::Module& model, const std::vector<std::vector<std::string>>& groups) {
  TORCH_CHECK_VALUE(!groups.empty(), "fuse: expected at least one group, got none");
  // Check everything first, so an error leaves the model unchanged.
  std::vector<Plan> plans;
  std::set<const nn::Module*> seen;
  for (const auto& names : groups) {
    plans.push_back(check_group(model, names));
    for (const Located* located : {&plans.back().conv, &plans.back().bn, &plans.back().relu}) {
      if (located->module == nullptr) continue;
      TORCH_CHECK_VALUE(seen.insert(located->module.get()).second, "fuse: group ",
                        group_text(names), ": expected each module in one group only, got a "
                        "module of this group in an earlier group too");
    }
  }
  FuseReport report;
  for (Plan& plan : plans) {
    apply(plan);
    report.groups.push_back(plan.report);
  }
  return report;
}

const FusedGroup* FuseReport::find_group(const std::string& name) const {
  for (const FusedGroup& group : groups) {
    for (const std::string& member : group.names) {
      if (member == name) return &group;
    }
  }
  return nullptr;
}

std::string FuseReport::to_string() const {
  std::ostringstream out;
  int64_t replaced = 0;
  for (const FusedGroup& group : groups) {
    out << group_text(group.names) << ": " << group.conv_type
        << (group.bias_added ? " (bias added)" : "") << ", batch norm "
        << tquant::to_string(group.batch_norm) << (group.relu ? ", relu kept after the conv" : "")
        << '\n';
    if (group.batch_norm == BatchNormRemoval::kReplacedByIdentity) ++replaced;
  }
  out << "fuse: " << groups.size() << " group(s) fused (" << replaced
      << " batch norm replaced by Identity, " << static_cast<int64_t>(groups.size()) - replaced
      << " identity in place)\n";
  return out.str();
}

std::ostream& operator<<(std::ostream& stream, const FuseReport& report) {
  return stream << report.to_string();
}

}  // namespace tquant
