// Socket family: UNIX sockets where Node's net module cannot reach: a listener bound with the narrowest mode, the
// peer's kernel credentials (SO_PEERCRED, SO_PEERGROUPS), descriptors passed as SCM_RIGHTS, datagrams (sd_notify),
// and a duplicate of a listening socket to keep across a live update.
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "gmfs_errors.h"
#include "gmfs_families.h"

namespace gmfs {
namespace {

constexpr size_t kMaxFds = 16;        // SCM_RIGHTS descriptors per message, both ways
constexpr int64_t kMaxMessage = 1 << 20;
constexpr int kMaxGroups = 65536;     // NGROUPS_MAX

// A sockaddr_un for path; a leading '@' names the abstract namespace, as systemd writes NOTIFY_SOCKET.
socklen_t AddressOf(Napi::Env env, const std::string& path, struct sockaddr_un* address, const char* syscall) {
  std::memset(address, 0, sizeof(*address));
  address->sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(address->sun_path)) {
    throw CodeError(env, "ENAMETOOLONG", ENAMETOOLONG, syscall,
                    "socket path must be 1 to " + std::to_string(sizeof(address->sun_path) - 1) + " bytes: " + path);
  }
  std::memcpy(address->sun_path, path.data(), path.size());
  if (path[0] == '@') address->sun_path[0] = '\0';
  return static_cast<socklen_t>(offsetof(struct sockaddr_un, sun_path) + path.size());
}

// unixListen(path, backlog, mode): a listening stream socket, close-on-exec. It is bound under umask 0177, so that
// no instant passes with the socket wider than its owner, then given `mode`: connect(2) needs write permission on it.
Napi::Value UnixListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "path");
  int backlog = static_cast<int>(ArgInt64(info, 1, "backlog", 1, 65535));
  mode_t mode = static_cast<mode_t>(ArgInt64(info, 2, "mode", 0, 0777));
  struct sockaddr_un address;
  socklen_t length = AddressOf(env, path, &address, "bind");
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw ErrnoError(env, errno, "socket");
  mode_t previous = umask(0177);
  int rc = bind(fd, reinterpret_cast<struct sockaddr*>(&address), length);
  int bindErrno = errno;
  umask(previous);
  if (rc < 0) {
    close(fd);
    throw ErrnoError(env, bindErrno, "bind", path);
  }
  if (chmod(path.c_str(), mode) < 0 || listen(fd, backlog) < 0) {
    int error = errno;
    close(fd);
    unlink(path.c_str());
    throw ErrnoError(env, error, "listen", path);
  }
  return Napi::Number::New(env, fd);
}

// unixConnect(path, timeoutMs): a connected stream socket, close-on-exec and blocking, whose reads and writes give up
// with EAGAIN after timeoutMs.
Napi::Value UnixConnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "path");
  int64_t timeoutMs = ArgInt64(info, 1, "timeoutMs", 1, 3600 * 1000);
  struct sockaddr_un address;
  socklen_t length = AddressOf(env, path, &address, "connect");
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw ErrnoError(env, errno, "socket");
  struct timeval timeout = {static_cast<time_t>(timeoutMs / 1000), static_cast<suseconds_t>((timeoutMs % 1000) * 1000)};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  int rc;
  do {
    rc = connect(fd, reinterpret_cast<struct sockaddr*>(&address), length);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    int error = errno;
    close(fd);
    throw ErrnoError(env, error, "connect", path);
  }
  return Napi::Number::New(env, fd);
}

// peerCredentials(fd): [pid, uid, gid, ...supplementary groups] of the process at the other end, as the kernel
// recorded them when it connected.
Napi::Value PeerCredentials(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  struct ucred credentials = {};
  socklen_t length = sizeof(credentials);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) < 0) throw ErrnoError(env, errno, "getsockopt");
  std::vector<gid_t> groups(64);
  socklen_t groupBytes = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
  if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &groupBytes) < 0) {
    if (errno != ERANGE) throw ErrnoError(env, errno, "getsockopt");
    if (groupBytes > kMaxGroups * sizeof(gid_t)) throw ErrnoError(env, ERANGE, "getsockopt");
    groups.resize(groupBytes / sizeof(gid_t));  // the kernel said how much room it needs
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &groupBytes) < 0) throw ErrnoError(env, errno, "getsockopt");
  }
  size_t groupCount = groupBytes / sizeof(gid_t);
  Napi::Array result = Napi::Array::New(env, 3 + groupCount);
  result.Set(0u, Napi::Number::New(env, credentials.pid));
  result.Set(1u, Napi::Number::New(env, credentials.uid));
  result.Set(2u, Napi::Number::New(env, credentials.gid));
  for (size_t i = 0; i < groupCount; i++) result.Set(static_cast<uint32_t>(3 + i), Napi::Number::New(env, groups[i]));
  return result;
}

std::vector<int> ArgFds(const Napi::CallbackInfo& info, size_t index) {
  if (!info[index].IsArray()) throw Napi::TypeError::New(info.Env(), "fds must be an array of descriptors");
  Napi::Array array = info[index].As<Napi::Array>();
  if (array.Length() > kMaxFds) throw CodeError(info.Env(), "EINVAL", EINVAL, "sendmsg", "at most 16 descriptors per message");
  std::vector<int> fds;
  for (uint32_t i = 0; i < array.Length(); i++) {
    Napi::Value value = array.Get(i);
    if (!value.IsNumber() || value.As<Napi::Number>().DoubleValue() < 0 || value.As<Napi::Number>().DoubleValue() > 0x7fffffff) {
      throw Napi::TypeError::New(info.Env(), "fds must be an array of descriptors");
    }
    fds.push_back(value.As<Napi::Number>().Int32Value());
  }
  return fds;
}

// sendWithFds(fd, bytes, fds): one sendmsg of bytes with fds attached as SCM_RIGHTS; the bytes written. A socket
// without room (EAGAIN on a non-blocking one) throws, so that the caller never interleaves with a partial write.
Napi::Value SendWithFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw Napi::TypeError::New(env, "bytes must be a Uint8Array");
  }
  Napi::Uint8Array bytes = info[1].As<Napi::Uint8Array>();
  std::vector<int> fds = ArgFds(info, 2);
  struct iovec vector = {bytes.Data(), bytes.ByteLength()};
  struct msghdr message = {};
  message.msg_iov = &vector;
  message.msg_iovlen = 1;
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  if (!fds.empty()) {
    message.msg_control = control;
    message.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    struct cmsghdr* header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(header), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t sent;
  do {
    sent = sendmsg(fd, &message, MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) throw ErrnoError(env, errno, "sendmsg");
  return Napi::Number::New(env, static_cast<double>(sent));
}

// receiveWithFds(fd, maxBytes): one recvmsg; { bytes, fds } with the descriptors close-on-exec. Descriptors beyond
// what fits are closed by the kernel (MSG_CTRUNC), which throws: the sender broke the protocol.
Napi::Value ReceiveWithFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  int64_t maxBytes = ArgInt64(info, 1, "maxBytes", 1, kMaxMessage);
  std::vector<uint8_t> buffer(static_cast<size_t>(maxBytes));
  struct iovec vector = {buffer.data(), buffer.size()};
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  struct msghdr message = {};
  message.msg_iov = &vector;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof(control);
  ssize_t received;
  do {
    received = recvmsg(fd, &message, MSG_CMSG_CLOEXEC);
  } while (received < 0 && errno == EINTR);
  if (received < 0) throw ErrnoError(env, errno, "recvmsg");
  Napi::Array fds = Napi::Array::New(env);
  for (struct cmsghdr* header = CMSG_FIRSTHDR(&message); header; header = CMSG_NXTHDR(&message, header)) {
    if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; i++) {
      int passed;
      std::memcpy(&passed, CMSG_DATA(header) + i * sizeof(int), sizeof(int));
      fds.Set(fds.Length(), Napi::Number::New(env, passed));
    }
  }
  if (message.msg_flags & MSG_CTRUNC) {
    for (uint32_t i = 0; i < fds.Length(); i++) close(fds.Get(i).As<Napi::Number>().Int32Value());
    throw CodeError(env, "EPROTO", EPROTO, "recvmsg", "more descriptors were sent than one message may carry (16)");
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("bytes", Napi::Buffer<uint8_t>::Copy(env, buffer.data(), static_cast<size_t>(received)));
  result.Set("fds", fds);
  return result;
}

// datagramSend(path, bytes): one datagram to a UNIX datagram socket (sd_notify's READY=1 to NOTIFY_SOCKET).
Napi::Value DatagramSend(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "path");
  std::string text = ArgString(info, 1, "message");
  struct sockaddr_un address;
  socklen_t length = AddressOf(env, path, &address, "sendto");
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw ErrnoError(env, errno, "socket");
  ssize_t sent = sendto(fd, text.data(), text.size(), MSG_NOSIGNAL, reinterpret_cast<struct sockaddr*>(&address), length);
  int error = errno;
  close(fd);
  if (sent < 0) throw ErrnoError(env, error, "sendto", path);
  return env.Undefined();
}

// fdDuplicate(fd): another descriptor of the same open file description, close-on-exec: a listening socket stays
// open through it while the server that used the original lets go of it (a live update of the service).
Napi::Value FdDuplicate(const Napi::CallbackInfo& info) {
  int duplicate = fcntl(ArgFd(info, 0), F_DUPFD_CLOEXEC, 3);
  if (duplicate < 0) throw ErrnoError(info.Env(), errno, "fcntl");
  return Napi::Number::New(info.Env(), duplicate);
}

// socketPair(): a connected pair of UNIX stream sockets, both close-on-exec: a lifeline between processes, whose
// holder learns through socketPeerClosed() when every copy of the other end has closed (its owners all exited).
Napi::Value SocketPair(const Napi::CallbackInfo& info) {
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0) throw ErrnoError(info.Env(), errno, "socketpair");
  Napi::Array pair = Napi::Array::New(info.Env(), 2);
  pair.Set(0u, Napi::Number::New(info.Env(), fds[0]));
  pair.Set(1u, Napi::Number::New(info.Env(), fds[1]));
  return pair;
}

// socketPeerClosed(fd): whether every copy of the other end of a stream socket has closed (hang-up), without waiting.
Napi::Value SocketPeerClosed(const Napi::CallbackInfo& info) {
  pollfd entry{ArgFd(info, 0), POLLRDHUP, 0};
  int ready;
  do {
    ready = poll(&entry, 1, 0);
  } while (ready < 0 && errno == EINTR);
  if (ready < 0) throw ErrnoError(info.Env(), errno, "poll");
  if (entry.revents & POLLNVAL) throw CodeError(info.Env(), "EBADF", EBADF, "poll", "fd " + std::to_string(entry.fd) + " is not open");
  return Napi::Boolean::New(info.Env(), (entry.revents & (POLLRDHUP | POLLHUP)) != 0);
}

}  // namespace

void RegisterSocketFamily(Napi::Env env, Napi::Object exports) {
  exports.Set("unixListen", Napi::Function::New(env, UnixListen, "unixListen"));
  exports.Set("unixConnect", Napi::Function::New(env, UnixConnect, "unixConnect"));
  exports.Set("peerCredentials", Napi::Function::New(env, PeerCredentials, "peerCredentials"));
  exports.Set("sendWithFds", Napi::Function::New(env, SendWithFds, "sendWithFds"));
  exports.Set("receiveWithFds", Napi::Function::New(env, ReceiveWithFds, "receiveWithFds"));
  exports.Set("fdDuplicate", Napi::Function::New(env, FdDuplicate, "fdDuplicate"));
  exports.Set("datagramSend", Napi::Function::New(env, DatagramSend, "datagramSend"));
  exports.Set("socketPair", Napi::Function::New(env, SocketPair, "socketPair"));
  exports.Set("socketPeerClosed", Napi::Function::New(env, SocketPeerClosed, "socketPeerClosed"));
}

}  // namespace gmfs
