-- record_body.lua: count one send of a body towards a sender's daily repetition figures.
-- The counts hash holds '~total' (sends), '~max' (largest count of one body) and up to cap
-- body-hash fields; bodies first seen after the cap is reached are counted by the HLL and
-- '~total' only.  Called by metrics_daily.DailyRecorder.
-- KEYS[1]        HyperLogLog of distinct bodies (keys.repetition_key)
-- KEYS[2]        counts hash (keys.repetition_counts_key)
-- ARGV[1]        body hash
-- ARGV[2]        cap (body-hash fields kept)
-- ARGV[3]        TTL of both keys in s
-- ARGV[4]        sends of this body to count at once (optional, default 1)
-- Returns        the count of this body (0 if untracked)
local n = ARGV[4] or '1'
redis.call('PFADD', KEYS[1], ARGV[1])
redis.call('HINCRBY', KEYS[2], '~total', n)
local c = 0
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1
    or redis.call('HLEN', KEYS[2]) < tonumber(ARGV[2]) + 2 then
  c = redis.call('HINCRBY', KEYS[2], ARGV[1], n)
  local m = tonumber(redis.call('HGET', KEYS[2], '~max') or '0')
  if c > m then redis.call('HSET', KEYS[2], '~max', c) end
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
return c
