// The guest runtime's native helper (an N-API addon), loaded only inside microVMs: what a restored
// clone needs and Node's JavaScript API does not offer.
//   reseed(bytes)    mixes the host's entropy into OpenSSL's DRBGs (primary, then this thread's public
//                    and private ones; other threads' DRBGs reseed on their next use, because their
//                    parent's reseed counter moved). Every clone of one snapshot starts with the same
//                    DRBG state, and OpenSSL cannot notice a VM clone (its fork check compares pids).
//   reseedCounts()   the primary and public DRBGs' reseed counters, so a test can see a reseed happen.
//   setClock(ms)     steps CLOCK_REALTIME: a clone resumes on the snapshot's wall clock.
// Built against the guest node's own headers (node ships OpenSSL's headers beside node_api.h), and
// resolved at load time against the OpenSSL symbols the node executable exports.
#include <errno.h>
#include <node_api.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <string.h>
#include <time.h>

#include <string>

namespace {

napi_value Throw(napi_env env, const std::string& message) {
  napi_throw_error(env, nullptr, message.c_str());
  return nullptr;
}

bool ReseedOne(EVP_RAND_CTX* drbg, const unsigned char* bytes, size_t len) {
  // The host's bytes go in as additional input; prediction resistance off, so the DRBG also pulls
  // fresh entropy from its seed source (the guest kernel's getrandom()).
  return drbg != nullptr && EVP_RAND_reseed(drbg, 0, nullptr, 0, bytes, len) == 1;
}

napi_value Reseed(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc < 1) {
    return Throw(env, "reseed needs a Buffer of entropy");
  }
  bool is_buffer = false;
  napi_is_buffer(env, argv[0], &is_buffer);
  if (!is_buffer) return Throw(env, "reseed needs a Buffer of entropy");
  void* data = nullptr;
  size_t len = 0;
  napi_get_buffer_info(env, argv[0], &data, &len);
  if (len < 16) return Throw(env, "reseed needs at least 16 bytes of entropy");
  const auto* bytes = static_cast<const unsigned char*>(data);
  if (!ReseedOne(RAND_get0_primary(nullptr), bytes, len)) {
    return Throw(env, "OpenSSL refused to reseed its primary DRBG");
  }
  if (!ReseedOne(RAND_get0_public(nullptr), bytes, len) ||
      !ReseedOne(RAND_get0_private(nullptr), bytes, len)) {
    return Throw(env, "OpenSSL refused to reseed this thread's DRBGs");
  }
  return nullptr;
}

double ReseedCount(EVP_RAND_CTX* drbg) {
  unsigned int counter = 0;
  OSSL_PARAM params[2] = {
      OSSL_PARAM_construct_uint(OSSL_DRBG_PARAM_RESEED_COUNTER, &counter),
      OSSL_PARAM_construct_end(),
  };
  if (drbg == nullptr || EVP_RAND_CTX_get_params(drbg, params) != 1) return -1;
  return counter;
}

napi_value ReseedCounts(napi_env env, napi_callback_info) {
  napi_value out, primary, pub;
  napi_create_object(env, &out);
  napi_create_double(env, ReseedCount(RAND_get0_primary(nullptr)), &primary);
  napi_create_double(env, ReseedCount(RAND_get0_public(nullptr)), &pub);
  napi_set_named_property(env, out, "primary", primary);
  napi_set_named_property(env, out, "public", pub);
  return out;
}

napi_value SetClock(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  double ms = 0;
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc < 1 ||
      napi_get_value_double(env, argv[0], &ms) != napi_ok || !(ms > 0) || ms > 4.1e15) {
    return Throw(env, "setClock needs the Unix time in milliseconds (a positive number)");
  }
  struct timespec ts;
  ts.tv_sec = static_cast<time_t>(ms / 1000);
  ts.tv_nsec = static_cast<long>((ms - static_cast<double>(ts.tv_sec) * 1000) * 1e6);
  if (ts.tv_nsec < 0) ts.tv_nsec = 0;
  if (ts.tv_nsec > 999999999) ts.tv_nsec = 999999999;
  if (clock_settime(CLOCK_REALTIME, &ts) != 0) {
    return Throw(env, std::string("clock_settime(CLOCK_REALTIME) failed: ") + strerror(errno));
  }
  return nullptr;
}

}  // namespace

NAPI_MODULE_INIT() {
  const napi_property_descriptor props[] = {
      {"reseed", nullptr, Reseed, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"reseedCounts", nullptr, ReseedCounts, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"setClock", nullptr, SetClock, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  return exports;
}
