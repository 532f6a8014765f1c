// Recording passes as CUDA graphs. The recording thread's ops go to a capture stream of the
// backend (captured in relaxed mode, so other threads keep running and allocating on the
// backend's stream meanwhile), and its tensors come from an arena that the graph keeps, since
// every replay writes them again. A replay is one cudaGraphLaunch on the backend's stream, in
// order with everything else.
#include <utility>
#include <vector>

#include "backends/cuda/cuda_backend.h"
#include "core/status.h"

namespace ds::cuda {
namespace {

// The backend the calling thread is recording on, if any.
thread_local const CudaBackend* t_recording = nullptr;

}  // namespace

// Device memory of one recording. Blocks freed while recording are reused by the same
// recording's later allocations (its ops run in order); none goes back to the pool, where other
// work could get it, until the recording and every tensor of it are gone.
class RecordingArena : public std::enable_shared_from_this<RecordingArena> {
 public:
  explicit RecordingArena(DevicePool& pool) : pool_(pool) {}
  ~RecordingArena() {
    for (const auto& [p, size_class] : owned_) pool_.Give(p, size_class);
  }

  absl::StatusOr<std::shared_ptr<void>> Get(size_t bytes) {
    const size_t size_class = DevicePool::SizeClass(bytes);
    void* p = free_.Pop(size_class);
    if (!p) {
      DS_ASSIGN_OR_RETURN(p, pool_.Take(size_class));
      std::lock_guard<std::mutex> lock(mutex_);
      owned_.emplace_back(p, size_class);
    }
    return std::shared_ptr<void>(p, [self = shared_from_this(), size_class](void* q) { self->free_.Push(q, size_class); });
  }

 private:
  DevicePool& pool_;
  FreeBlocks free_;
  std::mutex mutex_;  // guards owned_
  std::vector<std::pair<void*, size_t>> owned_;
};

class CudaRecording final : public Backend::Recording {
 public:
  CudaRecording(const CudaBackend& backend, cudaGraphExec_t exec, std::shared_ptr<RecordingArena> arena)
      : backend_(backend), exec_(exec), arena_(std::move(arena)) {}
  ~CudaRecording() override {
    // A replay may still be running: its memory goes back to the pool only after it.
    cudaStreamSynchronize(backend_.stream_);
    cudaGraphExecDestroy(exec_);
  }
  absl::Status Replay() override { return CudaBackend::Check(cudaGraphLaunch(exec_, backend_.stream_), "graph launch"); }

 private:
  const CudaBackend& backend_;
  cudaGraphExec_t exec_;
  std::shared_ptr<RecordingArena> arena_;
};

cudaStream_t CudaBackend::stream() const { return t_recording == this ? capture_stream_ : stream_; }

absl::StatusOr<std::shared_ptr<void>> CudaBackend::Allocate(size_t bytes) {
  if (t_recording == this) return arena_->Get(bytes);
  return pool_.Get(bytes);
}

absl::Status CudaBackend::BeginRecording() {
  if (!graphs_enabled_) return absl::UnimplementedError("cuda: graphs are off (DS_CUDA_GRAPHS=0)");
  if (t_recording) return absl::FailedPreconditionError("cuda: this thread is recording already");
  record_mutex_.lock();
  arena_ = std::make_shared<RecordingArena>(pool_);
  if (cudaError_t err = cudaStreamBeginCapture(capture_stream_, cudaStreamCaptureModeRelaxed); err != cudaSuccess) {
    arena_.reset();
    record_mutex_.unlock();
    return Check(err, "begin capture");
  }
  t_recording = this;
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Backend::Recording>> CudaBackend::EndRecording() {
  if (t_recording != this) return absl::FailedPreconditionError("cuda: this thread is not recording");
  t_recording = nullptr;
  cudaGraph_t graph = nullptr;
  cudaError_t err = cudaStreamEndCapture(capture_stream_, &graph);
  std::shared_ptr<RecordingArena> arena = std::move(arena_);
  record_mutex_.unlock();
  if (err != cudaSuccess) {
    cudaGetLastError();  // an invalidated capture is not sticky
    if (graph) cudaGraphDestroy(graph);
    return Check(err, "end capture");
  }
  cudaGraphExec_t exec = nullptr;
  err = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return Check(err, "graph instantiate");
  }
  return std::unique_ptr<Recording>(new CudaRecording(*this, exec, std::move(arena)));
}

}  // namespace ds::cuda
