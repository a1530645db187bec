-- claim_newest: the claim on a chat's newest turn, made in a turn's read (`store/mod.rs`: a
-- request that will follow the newest turn claims it, and only one claim on a turn holds at
-- a time).
--
-- KEYS: 1 turns, 2 the claim on the newest turn
-- ARGV: 1 the turn to claim: '*' the newest whichever it is, else a turn id (claimed only
--       while it is the newest), 2 the claimant (its own turn id), 3 how long the claim
--       holds, in seconds
-- Returns 1 when this claimant holds the claim now, 0 when another does (or the turn named
-- is not the newest, or the chat has none).
--
-- Safe to run twice: a claim made again finds its own claim, and holds.
local newest = redis.call('LINDEX', KEYS[1], -1)
if not newest then return 0 end
local id = string.match(string.sub(newest, 1, 200), '^{"id":"([^"]*)"')
if not id or (ARGV[1] ~= '*' and ARGV[1] ~= id) then return 0 end
local mine = id .. '\n' .. ARGV[2]
local held = redis.call('GET', KEYS[2])
-- A claim on another turn is spent: that turn is no longer the newest.
if held and held ~= mine and string.sub(held, 1, #id + 1) == id .. '\n' then return 0 end
redis.call('SET', KEYS[2], mine, 'EX', ARGV[3])
return 1
