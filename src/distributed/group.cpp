#include "tquant/distributed.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace tquant {

DistributedGroup::DistributedGroup(c10::intrusive_ptr<c10d::ProcessGroup> group,
                                   std::chrono::milliseconds timeout, c10::Device device)
    : group_(std::move(group)), timeout_(timeout), device_(device) {
  TORCH_CHECK_VALUE(group_, "DistributedGroup: expected a c10d::ProcessGroup, got a null pointer");
  rank_ = group_->getRank();
  size_ = group_->getSize();
}

DistributedGroup::DistributedGroup(c10::intrusive_ptr<c10d::Backend> backend,
                                   std::chrono::milliseconds timeout, c10::Device device)
    : backend_(std::move(backend)), timeout_(timeout), device_(device) {
  TORCH_CHECK_VALUE(backend_, "DistributedGroup: expected a c10d::Backend, got a null pointer");
  rank_ = backend_->getRank();
  size_ = backend_->getSize();
}

void DistributedGroup::wait(const c10::intrusive_ptr<c10d::Work>& work,
                            const std::string& what) const {
  try {
    work->wait(timeout_);
  } catch (const std::exception& e) {
    std::string cause = e.what();
    if (const auto* error = dynamic_cast<const c10::Error*>(&e)) {
      cause = error->what_without_backtrace();
    }
    TORCH_CHECK(false, what, ": collective failed on rank ", rank_, " of ", size_, " (timeout ",
                timeout_.count(), " ms): another rank died, never arrived, timed out or issued "
                "a different collective. This group cannot be used again; build a fresh one. "
                "Cause: ", cause);
  }
}

void DistributedGroup::allreduce(at::Tensor& tensor, c10d::ReduceOp op,
                                 const std::string& what) const {
  std::vector<at::Tensor> wire{tensor.to(device_).contiguous()};
  c10d::AllreduceOptions options;
  options.reduceOp = op;
  options.timeout = timeout_;
  wait(group_ ? group_->allreduce(wire, options) : backend_->allreduce(wire, options), what);
  if (!wire[0].is_same(tensor)) tensor.copy_(wire[0]);
}

void DistributedGroup::broadcast(at::Tensor& tensor, int root, const std::string& what) const {
  TORCH_CHECK_VALUE(root >= 0 && root < size_, what, ": expected a root rank in [0, ", size_,
                    "), got ", root);
  std::vector<at::Tensor> wire{tensor.to(device_).contiguous()};
  c10d::BroadcastOptions options;
  options.rootRank = root;
  options.timeout = timeout_;
  wait(group_ ? group_->broadcast(wire, options) : backend_->broadcast(wire, options), what);
  if (!wire[0].is_same(tensor)) tensor.copy_(wire[0]);
}

std::vector<at::Tensor> DistributedGroup::allgather_same_size(const at::Tensor& tensor,
                                                              const std::string& what) const {
  std::vector<at::Tensor> input{tensor.to(device_).contiguous()};
  std::vector<std::vector<at::Tensor>> output(1);
  for (int r = 0; r < size_; ++r) output[0].push_back(at::empty_like(input[0]));
  c10d::AllgatherOptions options;
  options.timeout = timeout_;
  wait(group_ ? group_->allgather(output, input, options)
              : backend_->allgather(output, input, options),
       what);
  return output[0];
}

std::vector<at::Tensor> DistributedGroup::allgather(const at::Tensor& tensor,
                                                    const std::string& what) const {
  TORCH_CHECK_VALUE(tensor.dim() == 1, what, ": allgather expects a 1-D tensor, got shape ",
                    tensor.sizes());
  // c10d's allgather needs equal shapes: gather the lengths, pad to the longest, cut back.
  auto length = at::full({1}, tensor.size(0), at::kLong);
  auto lengths = allgather_same_size(length, what + " (lengths)");
  int64_t longest = 0;
  std::vector<int64_t> sizes;
  for (const auto& l : lengths) {
    sizes.push_back(l.item<int64_t>());
    longest = std::max(longest, sizes.back());
  }
  auto padded = at::zeros({longest}, tensor.options().device(device_));
  padded.narrow(0, 0, tensor.size(0)).copy_(tensor);
  auto gathered = allgather_same_size(padded, what);
  std::vector<at::Tensor> result;
  for (int r = 0; r < size_; ++r) {
    result.push_back(gathered[r].narrow(0, 0, sizes[r]).to(tensor.device()));
  }
  return result;
}

}  // namespace tquant
