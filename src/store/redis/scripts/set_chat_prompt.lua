-- set_chat_prompt: sets a chat's system prompt and renews the chat's expiry.
--
-- KEYS: 1 system, 2 turns, 3 meta
-- ARGV: 1 ttl ('0': none), 2 the prompt, 3 now (Unix milliseconds)
-- Returns 1, or 2 for a temporary chat (which is not listed).
--
-- Safe to run twice: the same prompt and expiry, set again. A run sent again after another
-- request set a prompt meanwhile sets this one, as it would have if sent a moment later:
-- the two requests overlapped, and either order is theirs.
redis.call('SET', KEYS[1], ARGV[2])
stamp(KEYS[3], ARGV[3])
local ttl, temporary = chat_ttl(KEYS[3], ARGV[1])
touch(KEYS, ttl, 1, 3)
if temporary then return 2 end
return 1
