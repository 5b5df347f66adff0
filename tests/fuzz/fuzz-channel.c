/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the master<->worker message decoder accepts only well-formed messages. */
#include <assert.h>
#include <stdint.h>

#include "daemon.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct channel_msg m;

	if (size < 2)
		return 0;
	/* The first two bytes stand for what recvmsg would say: fd count, listener count. */
	size_t n_fds = data[0] % (CHANNEL_MAX_FDS + 2), n_listeners = data[1] % 40;
	if (channel_decode(data + 2, size - 2, n_fds, n_listeners, &m) == 0) {
		bool fds = m.type == CHANNEL_FDS || m.type == CHANNEL_DGRAM ||
			   m.type == CHANNEL_MIGRATED;

		assert(m.type >= CHANNEL_FDS && m.type <= CHANNEL_MIGRATED);
		assert(!fds || (m.count == n_fds && m.count <= CHANNEL_MAX_FDS));
		assert(fds || n_fds == 0);
		assert(m.type != CHANNEL_GONE || m.count == 1);
		for (size_t i = 0; i < m.count; i++)
			assert(fds || m.type == CHANNEL_GONE ? m.listener[i] < n_listeners :
							      m.listener[i] <= 1);
	}
	return 0;
}
