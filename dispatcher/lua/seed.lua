-- seed.lua: re-seed a brand's throttle from the outbox after Redis lost it (flush, restart
-- without persistence, failover), and only then create the brand's epoch: a reservation finds
-- no epoch until its buckets hold every send that may share a window with it.  Atomic with
-- the epoch: a second seeder for the same loss finds the epoch and writes nothing.
-- Called by RedisThrottle (its seeder reads the outbox: dispatcher/throttle/seed.py).
-- KEYS[1]        the brand's epoch (keys.throttle_epoch_key)
-- KEYS[2]        the brand's seed lock (keys.throttle_seed_lock_key)
-- KEYS[2+j]      bucket j (keys.bucket_key), j = 1..nb
-- KEYS[2+nb+j]   bucket j's state (keys.throttle_sum_key; reserve.lua), dropped: rebuilt from the log
-- ARGV[1]        the new epoch
-- ARGV[2]        the lock token (the lock is released only if it still holds it)
-- ARGV[3]        now_ms (the seeder's "now": the throttle's clock)
-- ARGV[4]        nb
-- ARGV[4+j]      bucket j: 'w:L_ms|pos:cost:member,...' (sliding; pos '' = now) or
--                'c:ttl_ms|field:cost,...' (calendar: period start -> cost)
-- Returns        1 if seeded now, 0 if the brand already had an epoch
local now = tonumber(ARGV[3])
if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local nb = tonumber(ARGV[4])
for j = 1, nb do
  local key = KEYS[2 + j]
  local kind, span, rest = string.match(ARGV[4 + j], '^(%a):(%d+)|(.*)$')
  span = tonumber(span)
  if kind == 'w' then
    local last = nil
    for pos, cost, member in string.gmatch(rest, '(%d*):(%d+):([^,]+)') do
      -- a send is placed no later than now: a new booking lies at or after it
      local p = now
      if pos ~= '' and tonumber(pos) < now then p = tonumber(pos) end
      if p > now - span then
        redis.call('ZADD', key, p, member .. ':' .. cost)
        if last == nil or p > last then last = p end
      end
    end
    redis.call('DEL', KEYS[2 + nb + j]) -- the next reservation recomputes it from the log
    if last ~= nil then
      local keep = last + span - now + 1000
      if redis.call('PTTL', key) < keep then redis.call('PEXPIRE', key, keep) end
    end
  else
    for field, cost in string.gmatch(rest, '(%d+):(%d+)') do
      redis.call('HINCRBY', key, field, tonumber(cost))
    end
    if redis.call('EXISTS', key) == 1 and redis.call('PTTL', key) < span then
      redis.call('PEXPIRE', key, span)
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', 172800000)
return 1
