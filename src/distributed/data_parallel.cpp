#include "tquant/distributed.h"

#include <cstring>
#include <map>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace tquant {

namespace {

struct NamedTensor {
  std::string name;
  at::Tensor tensor;
};

std::vector<NamedTensor> state_tensors(torch::nn::Module& model) {
  std::vector<NamedTensor> tensors;
  for (const auto& p : model.named_parameters()) tensors.push_back({p.key(), p.value()});
  for (const auto& b : model.named_buffers()) tensors.push_back({b.key(), b.value()});
  return tensors;
}

/// Groups tensors of one dtype and device into buckets of at most `bucket_bytes` (a larger
/// tensor alone), in order; each bucket travels as one flat tensor.
std::vector<std::vector<at::Tensor>> buckets_of(const std::vector<at::Tensor>& tensors,
                                                int64_t bucket_bytes) {
  std::map<std::pair<at::ScalarType, std::string>, size_t> open;  // (dtype, device) -> bucket
  std::vector<std::vector<at::Tensor>> buckets;
  std::vector<int64_t> bytes;
  for (const auto& t : tensors) {
    if (t.numel() == 0) continue;
    const auto key = std::make_pair(t.scalar_type(), t.device().str());
    const int64_t size = t.numel() * static_cast<int64_t>(t.element_size());
    auto it = open.find(key);
    if (it == open.end() || bytes[it->second] + size > bucket_bytes) {
      buckets.emplace_back();
      bytes.push_back(0);
      it = open.insert_or_assign(key, buckets.size() - 1).first;
    }
    buckets[it->second].push_back(t);
    bytes[it->second] += size;
  }
  return buckets;
}

at::Tensor flatten(const std::vector<at::Tensor>& bucket) {
  std::vector<at::Tensor> flat;
  for (const auto& t : bucket) flat.push_back(t.reshape({-1}));
  return at::cat(flat);
}

void unflatten_into(const at::Tensor& flat, std::vector<at::Tensor>& bucket) {
  int64_t offset = 0;
  for (auto& t : bucket) {
    t.copy_(flat.narrow(0, offset, t.numel()).view(t.sizes()));
    offset += t.numel();
  }
}

/// FNV-1a over the bytes, dtype and shape of a tensor.
int64_t tensor_hash(const at::Tensor& tensor) {
  uint64_t hash = 1469598103934665603ULL;
  auto mix = [&](const void* data, size_t size) {
    const auto* bytes = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < size; ++i) {
      hash ^= bytes[i];
      hash *= 1099511628211ULL;
    }
  };
  if (!tensor.defined()) return 0;
  const auto dtype = static_cast<int>(tensor.scalar_type());
  mix(&dtype, sizeof(dtype));
  for (int64_t size : tensor.sizes()) mix(&size, sizeof(size));
  auto host = tensor.detach().to(at::kCPU).contiguous();
  mix(host.data_ptr(), host.numel() * host.element_size());
  int64_t result;
  std::memcpy(&result, &hash, sizeof(result));
  return result;
}

}  // namespace

void broadcast_parameters_and_buffers(torch::nn::Module& model, const DistributedGroup& group,
                                      int root) {
  const std::string what = "tquant::broadcast_parameters_and_buffers";
  check_same_model(model, group, what);
  at::NoGradGuard no_grad;
  auto tensors = state_tensors(model);
  // Observer and quantizer tensors take their shapes from data: send root's shapes first.
  std::vector<int64_t> shapes;
  for (const auto& t : tensors) {
    if (!t.tensor.defined()) {
      shapes.push_back(-1);
      continue;
    }
    shapes.push_back(t.tensor.dim());
    for (int64_t size : t.tensor.sizes()) shapes.push_back(size);
  }
  auto length = at::full({1}, static_cast<int64_t>(shapes.size()), at::kLong);
  group.broadcast(length, root, what + " (shape list length)");
  auto wire = at::zeros({length.item<int64_t>()}, at::kLong);
  if (group.rank() == root) std::copy(shapes.begin(), shapes.end(), wire.data_ptr<int64_t>());
  group.broadcast(wire, root, what + " (shapes)");
  const auto* shape = wire.data_ptr<int64_t>();
  std::vector<at::Tensor> payload;
  for (auto& t : tensors) {
    const int64_t dims = *shape++;
    if (dims < 0) continue;  // undefined on root: leave as is (the signature matched)
    std::vector<int64_t> sizes(shape, shape + dims);
    shape += dims;
    if (t.tensor.sizes() != c10::IntArrayRef(sizes)) {
      t.tensor.set_data(at::empty(sizes, t.tensor.options()));
    }
    payload.push_back(t.tensor);
  }
  for (auto& bucket : buckets_of(payload, kDefaultBucketBytes)) {
    auto flat = flatten(bucket);
    group.broadcast(flat, root, what + " (values)");
    unflatten_into(flat, bucket);
  }
}

void average_gradients(torch::nn::Module& model, const DistributedGroup& group,
                       int64_t bucket_bytes) {
  const std::string what = "tquant::average_gradients";
  TORCH_CHECK_VALUE(bucket_bytes > 0, what, ": expected bucket_bytes > 0, got ", bucket_bytes);
  at::NoGradGuard no_grad;
  auto parameters = model.named_parameters();
  // Which parameters have a gradient on any rank (one small all-reduce MAX), so that every
  // rank builds the same buckets even when a branch ran on some ranks only.
  auto has_grad = at::zeros({static_cast<int64_t>(parameters.size())}, at::kByte);
  for (size_t i = 0; i < parameters.size(); ++i) {
    has_grad.data_ptr<uint8_t>()[i] = parameters[i].value().grad().defined() ? 1 : 0;
  }
  group.allreduce(has_grad, c10d::ReduceOp::MAX, what + " (which parameters have gradients)");
  std::vector<at::Tensor> grads;
  const auto* any = has_grad.data_ptr<uint8_t>();
  for (size_t i = 0; i < parameters.size(); ++i) {
    if (any[i] == 0) continue;
    at::Tensor param = parameters[i].value();
    if (!param.grad().defined()) param.mutable_grad() = at::zeros_like(param);
    grads.push_back(param.grad());
  }
  const double world = static_cast<double>(group.world_size());
  for (auto& bucket : buckets_of(grads, bucket_bytes)) {
    auto flat = flatten(bucket);
    group.allreduce(flat, c10d::ReduceOp::SUM, what + " (gradient bucket)");
    flat.div_(world);
    unflatten_into(flat, bucket);
  }
}

std::string find_replica_difference(torch::nn::Module& model, const DistributedGroup& group) {
  const std::string what = "tquant::find_replica_difference";
  check_same_model(model, group, what);
  auto tensors = state_tensors(model);
  auto hashes = at::empty({static_cast<int64_t>(tensors.size())}, at::kLong);
  for (size_t i = 0; i < tensors.size(); ++i) {
    hashes.data_ptr<int64_t>()[i] = tensor_hash(tensors[i].tensor);
  }
  const auto all = group.allgather(hashes, what + " (tensor hashes)");
  for (size_t i = 0; i < tensors.size(); ++i) {
    const int64_t reference = all[0].data_ptr<int64_t>()[i];
    for (int r = 1; r < group.world_size(); ++r) {
      if (all[r].data_ptr<int64_t>()[i] != reference) {
        return tensors[i].name + " differs between rank 0 and rank " + std::to_string(r);
      }
    }
  }
  return "";
}

}  // namespace tquant
